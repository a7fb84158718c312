"""Enhancing a compressed video frame by frame: decoded luma through the enhancer, the rest
kept (PyAV, whose wheels bundle FFmpeg; the enhancer is any callable, so no TensorFlow here).

The network's input convention is BT.601 studio-range Y in [0, 1] (rbqe_tf.color): the
decoded Y plane of an H.264/HEVC stream already is that, so frames are never converted
to RGB. Each frame's Y plane (8-bit, or 9-16-bit scaled by 255·2^(bits−8), so that
10-bit 940 is 8-bit 235) goes to the enhancer as a gray image, which takes its own
decision per frame (gain with exit 0, or score): a gray image's gain features are read
on the plane as it is, which is the plane the video codec coded. Chroma (and alpha)
planes are copied byte for byte, an exit-0 frame's Y too; the pixel format, and with it
the bit depth and chroma subsampling, is the input's.

The output is Matroska (it holds every codec it copies): ``ffv1`` (lossless, the
default: what is measured is the enhancement alone), or ``libx264``/``libx265`` at a
CRF for a file that plays anywhere. Frames keep their timestamps (variable frame rate
kept; Matroska stores milliseconds, and negative ones, so an AAC stream's priming does
not shift the video), the frame rate, colour range, matrix, primaries and transfer,
rotation, and with libx264/libx265 the sample aspect ratio. Audio and subtitle streams
are copied packet for packet; streams Matroska cannot hold, data streams and attachments
are dropped and named. One frame is in memory at a time (the enhancer tiles large
frames). A shot's frames are alike, so a decision may serve the next frames of its shot
(``decide_every``): with the gain decision the decision is most of an unchanged frame's
cost (docs/video.md).

The video and a JSON sidecar (``<output>.json``: per-frame exits and timestamps, the
decision's numbers, the exit histogram) are written atomically; neither replaces an
existing file without ``overwrite``.
"""
import json
import os
import time

import av
import numpy as np

from rbqe_tf.batch import DEFAULT_CRF, DEFAULT_DECIDE_EVERY, VIDEO_CODECS, make_folder
from rbqe_tf.cli import printable
from rbqe_tf.files import write_atomically, write_text

PROGRESS_EVERY = 100  # frames between progress lines
PROGRESS_SECONDS = 10  # and at most this long between them (a slow 4K frame takes seconds)
SCENE_CUT = 0.1
"""Mean absolute difference (Y in [0, 1]) of two frames' 8×-downscaled Y planes above
which a reused decision is dropped: a new shot is decided afresh."""
MODEL_FOR_STREAM = {"hevc": "hevc"}
"""Decoder name → model family; every other stream (h264, mjpeg, mpeg2video, ...) uses
the JPEG model, as block-DCT coding. A family whose model does not ship falls back to
the JPEG model (:func:`model_for_stream`)."""
_ENCODER_OPTIONS = {"libx264": {}, "libx265": {"x265-params": "log-level=error"}}
_COLOUR = ("color_range", "colorspace", "color_primaries", "color_trc")
_KEPT_TAGS = ("language", "title")


class VideoError(ValueError):
    """A video that cannot be read, encoded or written; the message names the file."""


def sidecar_path(target):
    """The JSON sidecar beside output video ``target``."""
    return target + ".json"


def model_for_stream(stream_codec, shipped):
    """(model family, note or None) for a stream's decoder name; ``shipped``: the
    families whose model ships (rbqe_tf.model.DEFAULT_WEIGHTS). A missing model falls
    back to the JPEG one, said in the note."""
    wanted = MODEL_FOR_STREAM.get(stream_codec, "jpeg")
    if wanted in shipped:
        return wanted, None
    return "jpeg", f"no {wanted} model ships yet"


def enhance_video(path, target, enhance_for, video_codec="ffv1", crf=DEFAULT_CRF,
                  overwrite=False, progress_every=PROGRESS_EVERY,
                  decide_every=DEFAULT_DECIDE_EVERY):
    """Enhances video ``path`` into ``target`` (Matroska) and its sidecar → the report
    (the sidecar's content).

    ``enhance_for(stream codec name)`` → (``enhance``, model description):
    ``enhance(y, exit=None)`` takes a gray float32 image in [0, 1] (and an exit to force)
    and returns a result with ``image``, ``exit``, ``scores``, ``gains`` and ``ms`` (an
    :class:`rbqe_tf.enhancer.EnhanceResult` or :class:`rbqe_tf.litert.runner.RunResult`).
    ``crf`` applies to libx264/libx265. ``decide_every`` > 1: a frame's decision is
    reused as a forced exit, for the next ``decide_every`` − 1 frames of its shot (a
    frame further than :data:`SCENE_CUT` from the deciding one decides afresh): a
    shot's frames are alike. Raises :class:`VideoError`.
    """
    if video_codec not in VIDEO_CODECS:
        raise ValueError(f"video_codec must be one of {', '.join(VIDEO_CODECS)}, "
                         f"got {video_codec!r}")
    if decide_every < 1:
        raise ValueError(f"decide_every must be at least 1, got {decide_every}")
    sidecar = sidecar_path(target)
    if os.path.exists(sidecar) and not overwrite:
        raise VideoError(f"{sidecar}: exists (use --overwrite to replace it)")
    index, first = _first_frame(path)
    with av.open(path, metadata_errors="replace") as source:
        stream = source.streams.video[index]
        enhance, model = enhance_for(stream.codec_context.name)
        report = _report(path, target, stream, model, video_codec, crf, decide_every)
        make_folder(os.path.dirname(target))
        try:
            write_atomically(target, lambda tmp: _transcode(
                source, stream, first, tmp, enhance, video_codec, crf, report,
                progress_every), overwrite)
        except FileExistsError:
            raise VideoError(f"{target}: exists (use --overwrite to replace it)") from None
        except (av.FFmpegError, OSError) as e:
            raise VideoError(f"{path}: failed after {report['frames']} frames "
                             f"({_reason(e)})") from None
    # One key per line, each value compact: per-frame lists stay one line each.
    write_text(sidecar, "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}"
                                           for k, v in report.items()) + "\n}\n", overwrite)
    return report


def _first_frame(path):
    """(index among the video streams, first frame) of the stream to enhance (FFmpeg's
    best one): the frame sets the output's format, colour and rotation before the output
    header is written."""
    if not os.path.isfile(path):
        raise VideoError(f"{path}: " + ("not a regular file" if os.path.exists(path)
                                         else "no such file"))
    try:
        with av.open(path, metadata_errors="replace") as probe:
            stream = probe.streams.best("video")
            if stream is None:
                raise VideoError(f"{path}: no video stream")
            index = probe.streams.video.index(stream)
            for frame in probe.decode(stream):
                return index, frame
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: cannot read video ({_reason(e)})") from None
    raise VideoError(f"{path}: no decodable video frame")


def _reason(e):
    return getattr(e, "strerror", None) or str(e)


def _luma_bits(fmt):
    """Bits of the Y samples if plane 0 holds Y alone (planar or semi-planar YUV, gray)
    as integers of at most 16 bits, else None (RGB, packed YUV, big-endian, float)."""
    y, *rest = fmt.components
    if not y.is_luma or fmt.is_rgb or fmt.is_big_endian or y.bits > 16 \
            or any(c.plane == 0 for c in rest):
        return None
    return y.bits


def _output_format(path, fmt, video_codec):
    """(encoder pixel format, full range forced): the input's, or for ``yuvj*`` (full-range
    MJPEG) the same bytes as ``yuv*`` marked full range where the encoder lacks it."""
    formats = {f.name for f in av.Codec(video_codec, "w").video_formats}
    if fmt.name in formats:
        return fmt.name, False
    if fmt.name.startswith("yuvj") and "yuv" + fmt.name[4:] in formats:
        return "yuv" + fmt.name[4:], True
    raise VideoError(f"{path}: {video_codec} cannot encode pixel format {fmt.name}"
                     + (" (use --video_codec ffv1)" if video_codec != "ffv1" else ""))


def _report(path, target, stream, model, video_codec, crf, decide_every):
    return {"input": path, "output": target, "stream_codec": stream.codec_context.name,
            "model": model, "video_codec": video_codec,
            "crf": crf if video_codec != "ffv1" else None, "decide_every": decide_every,
            "frames": 0, "exit_histogram": [], "seconds": 0.0, "time_base": None, "pts": [],
            "exits": [], "decided": [], "gains": [], "scores": [], "streams_copied": [],
            "streams_dropped": []}


def _transcode(source, stream, first, tmp, enhance, video_codec, crf, report, progress_every):
    bits = _luma_bits(first.format)
    if bits is None:
        raise VideoError(f"{report['input']}: pixel format {first.format.name} has no "
                         "separate Y plane (planar YUV or gray needed)")
    pix_fmt, full_range = _output_format(report["input"], first.format, video_codec)
    rate, time_base = stream.guessed_rate or stream.average_rate, stream.time_base
    if not rate or not time_base:
        raise VideoError(f"{report['input']}: no frame rate")
    report["time_base"] = str(time_base)
    # Negative timestamps allowed: AAC priming (pts < 0) must not shift every stream.
    with av.open(tmp, "w", format="matroska",
                 container_options={"avoid_negative_ts": "disabled"}) as out:
        video = _video_stream(out, stream, first, pix_fmt, full_range, rate, video_codec, crf)
        copies = _copied_streams(source, stream, out, report)
        write = _FrameWriter(out, video, enhance, first.format.name, bits, full_range,
                             time_base, rate, report, progress_every,
                             _expected_frames(source, stream, rate))
        for packet in source.demux([stream, *(s for s in source.streams if s.index in copies)]):
            if packet.stream is stream:
                for frame in packet.decode():
                    write(frame)
            elif packet.size:
                packet.stream = copies[packet.stream.index]
                out.mux(packet)
        out.mux(video.encode(None))
    counts = np.bincount(report["exits"], minlength=1 + max(report["exits"], default=0))
    report["exit_histogram"] = counts.tolist()


def _video_stream(out, stream, first, pix_fmt, full_range, rate, video_codec, crf):
    options = ({"crf": str(crf), **_ENCODER_OPTIONS[video_codec]}
               if video_codec != "ffv1" else {})
    video = out.add_stream(video_codec, rate=rate, options=options)
    video.width, video.height, video.pix_fmt = first.width, first.height, pix_fmt
    video.time_base = video.codec_context.time_base = stream.time_base
    # Kept in x264's and x265's bitstream; Matroska's display size would hold it for
    # ffv1, but it comes from AVStream.sample_aspect_ratio, which PyAV cannot set.
    if stream.sample_aspect_ratio:
        video.codec_context.sample_aspect_ratio = stream.sample_aspect_ratio
    _copy_colour(first, video.codec_context, full_range)
    if first.rotation:
        video.set_display_rotation(first.rotation)
    _copy_tags(stream, video)
    return video


def _copy_colour(source, target, full_range):
    for name in _COLOUR:
        setattr(target, name, getattr(source, name))
    if full_range:
        target.color_range = av.video.reformatter.ColorRange.JPEG


def _copy_tags(source, target):
    for key in _KEPT_TAGS:
        if key in source.metadata:
            target.metadata[key] = source.metadata[key]


def _copied_streams(source, enhanced, out, report):
    """Output streams for the input's audio and subtitle streams that Matroska can hold →
    {input index: output stream}; the others (data, attachments, further video streams
    such as cover art) are named in the report as dropped."""
    copies = {}
    for s in source.streams:
        if s is enhanced:
            continue
        name = f"#{s.index} {s.type} {s.codec_context.name or '?'}"
        if s.type in ("audio", "subtitle") and s.codec_context.name in out.supported_codecs:
            copies[s.index] = out.add_stream_from_template(s)
            _copy_tags(s, copies[s.index])
            report["streams_copied"].append(name)
        else:
            report["streams_dropped"].append(name)
    return copies


def _expected_frames(source, stream, rate):
    """(frames the progress line counts to, whether estimated from the duration); None
    where neither the stream nor the container says."""
    if stream.frames:
        return stream.frames, False
    if source.duration:
        return round(source.duration / av.time_base * rate), True
    return None, False


class _FrameWriter:
    """Called with each decoded frame: enhances its Y, encodes and muxes the frame,
    records the exit and prints a progress line every ``progress_every`` frames (0:
    none), and after any frame that ends :data:`PROGRESS_SECONDS` without one."""

    def __init__(self, out, video, enhance, in_format, bits, full_range, time_base, rate,
                 report, progress_every, expected):
        self.out, self.video, self.enhance, self.report = out, video, enhance, report
        self.in_format, self.bits, self.full_range = in_format, bits, full_range
        self.dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
        self.scale = np.float32(255 << (bits - 8))
        self.time_base = time_base
        self.step = round(1 / (rate * time_base))  # for frames without pts (raw streams)
        self.last = -self.step
        self.progress_every = progress_every
        self.total, self.estimated = expected
        self.decided = None  # [exit, thumbnail, frames served] of the last decision
        self.start = self.said = time.perf_counter()

    def __call__(self, frame):
        if frame.format.name != self.in_format:
            raise VideoError(f"{self.report['input']}: pixel format changes from "
                             f"{self.in_format} to {frame.format.name} at frame "
                             f"{self.report['frames']}")
        y = _plane(frame.planes[0], self.dtype).astype(np.float32) / self.scale
        reused = self._reused_exit(y)
        result = self.enhance(y) if reused is None else self.enhance(y, exit=reused)
        if reused is None and self.decided is not None:
            self.decided[0] = int(result.exit)
        new = av.VideoFrame(frame.width, frame.height, self.video.pix_fmt)
        for src, dst in zip(frame.planes, new.planes):
            width = min(src.line_size, dst.line_size)
            _plane(dst, np.uint8, width)[...] = _plane(src, np.uint8, width)
        if result.exit != 0:  # exit 0: Y stays the decoded bytes
            _plane(new.planes[0], self.dtype)[...] = np.minimum(
                np.round(np.asarray(result.image) * self.scale), (1 << self.bits) - 1)
        new.pts = self.last = frame.pts if frame.pts is not None else self.last + self.step
        new.time_base = self.time_base
        _copy_colour(frame, new, self.full_range)
        self.out.mux(self.video.encode(new))
        report = self.report
        report["pts"].append(new.pts)
        report["exits"].append(int(result.exit))
        report["decided"].append(reused is None)
        report["gains"].append(_rounded(result.gains))
        report["scores"].append(_rounded(_one_group(result.scores)))
        report["frames"] = n = len(report["exits"])
        now = time.perf_counter()
        report["seconds"] = round(now - self.start, 3)
        if self.progress_every and (n % self.progress_every == 0
                                    or now - self.said >= PROGRESS_SECONDS):
            self.said = now
            self._progress(n)

    def _reused_exit(self, y):
        """The exit to force on frame ``y`` (the last decision's, within its shot and
        ``decide_every`` frames), or None: decide afresh (remembered for the next)."""
        every = self.report["decide_every"]
        if every == 1:
            return None
        thumb = _thumbnail(y)
        if self.decided is not None:
            exit, decided_on, served = self.decided
            if served < every and np.mean(np.abs(thumb - decided_on)) <= SCENE_CUT:
                self.decided[2] += 1
                return exit
        self.decided = [None, thumb, 1]
        return None

    def _progress(self, n):
        seconds = self.report["seconds"]
        fps = n / seconds if seconds else 0.0
        total = self.total and max(self.total, n)
        of = f"/{'~' if self.estimated else ''}{total}" if total else ""
        eta = f", ETA {_clock((total - n) / fps)}" if total and fps else ""
        print(printable(f"  {self.report['input']}: frame {n}{of}, {_speed(n, seconds)}{eta}"),
              flush=True)


def _plane(plane, dtype, width_bytes=None):
    """Writable NumPy view [height, width] of a frame plane (``width_bytes``: raw bytes
    per row instead of the plane's samples)."""
    dtype = np.dtype(dtype)
    per_row = plane.line_size // dtype.itemsize
    rows = np.frombuffer(plane, dtype, plane.height * per_row).reshape(plane.height, per_row)
    return rows[:, :width_bytes or plane.width]


def _thumbnail(y):
    """Y [H, W] averaged over 8×8 blocks (whole blocks only): what a scene cut changes."""
    h, w = (n // 8 * 8 for n in y.shape)
    if not h or not w:
        return y.mean(keepdims=True)
    return y[:h, :w].reshape(h // 8, 8, w // 8, 8).mean((1, 3))


def _one_group(scores):
    """A Runner's scores per tile group → the one group's, as the Enhancer gives them."""
    return scores[0] if len(scores) == 1 and isinstance(scores[0], (list, tuple)) else scores


def _rounded(values):
    return [_rounded(v) if isinstance(v, (list, tuple)) else round(float(v), 4)
            for v in values]


def _speed(frames, seconds):
    """Frames per second, or seconds per frame when a frame takes longer (a 4K frame at
    exit 5 takes tens of seconds: "0.0 fps" would say nothing)."""
    if frames and seconds > frames:
        return f"{seconds / frames:.1f} s/frame"
    return f"{frames / seconds if seconds else 0.0:.1f} fps"


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def summary(report):
    """The middle of the per-file report line: frames, exit histogram, model, speed."""
    histogram = " ".join(f"{k}:{n}" for k, n in enumerate(report["exit_histogram"]) if n)
    dropped = (f"; dropped {', '.join(report['streams_dropped'])}"
               if report["streams_dropped"] else "")
    n = sum(report["decided"])
    decided = (f" in {n} decision{'s' if n != 1 else ''}" if report["decide_every"] > 1
               else "")
    return (f"{report['frames']} frames, exits {histogram or '-'}{decided} "
            f"({report['stream_codec']} "
            f"stream: {report['model']}{dropped}), {_speed(report['frames'], report['seconds'])}, "
            f"{report['video_codec']}")

