"""Small video clips for the tests (PyAV), shared by tests/test_video.py and
tests/test_pipeline.py; not a test module (plain helpers, no state, like tests/fuzzing.py)."""
from fractions import Fraction

import av
import numpy as np

COLOUR = ("colorspace", "color_primaries", "color_trc", "color_range")


def make_clip(path, codec="libx264", pix_fmt="yuv420p", frames=8, size=(64, 48), rate=15,
          time_base=None, pts=None, audio=True, subtitles=False, rotation=None, bt709=False,
          aspect=None, photo=None, options=None):
    """A small clip of moving smooth noise, or with ``photo`` (a Y plane) a pan over it
    with neutral chroma (+ 8 kHz AAC silence, + an SRT track, + BT.709 limited-range
    colour tags, + a sample aspect ratio; ``options``: the encoder's)."""
    rng = np.random.default_rng(0)
    out = av.open(str(path), "w", format="h264" if str(path).endswith(".264") else None)
    options = {**({"x265-params": "log-level=error"} if codec == "libx265" else {}),
               **(options or {})}
    stream = out.add_stream(codec, rate=rate, options=options)
    stream.width, stream.height = size
    stream.pix_fmt = pix_fmt
    time_base = time_base or Fraction(1, rate)
    stream.time_base = stream.codec_context.time_base = time_base
    if rotation is not None:
        stream.set_display_rotation(rotation)
    if aspect:
        stream.codec_context.sample_aspect_ratio = aspect
    colour = dict.fromkeys(COLOUR, 1) if bt709 else {}
    for name, value in colour.items():
        setattr(stream.codec_context, name, value)
    sound = out.add_stream("aac", rate=8000, layout="mono") if audio else None
    if subtitles:
        srt = path.with_suffix(".srt")
        srt.write_text("1\n00:00:00,000 --> 00:00:00,300\nHello\n\n"
                       "2\n00:00:00,300 --> 00:00:00,500\nWorld\n")
        cues = av.open(str(srt))
        text = out.add_stream_from_template(cues.streams[0])
    bits = av.VideoFormat(pix_fmt).components[0].bits
    base = rng.random((size[1] // 4 + 2, size[0] // 4 + 2))
    for i in range(frames):
        frame = av.VideoFrame(*size, pix_fmt)
        for p, plane in enumerate(frame.planes):
            smooth = np.kron(np.roll(base, i, 1), np.ones((4, 4)))
            values = 40 + 150 * smooth[:plane.height, :plane.width] + 10 * p
            values += rng.normal(0, 6, values.shape)
            view = plane_view(plane, np.uint16 if bits > 8 else np.uint8)
            view[...] = np.clip(np.round(values * 2 ** (bits - 8)), 0, 2 ** bits - 1)
            if photo is not None:
                view[...] = photo(i) if p == 0 else 128
        frame.pts = i if pts is None else pts[i]
        for name, value in colour.items():
            setattr(frame, name, value)
        frame.time_base = time_base
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    if sound:
        for start in range(0, frames * 8000 // rate, 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            chunk.sample_rate, chunk.pts = 8000, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    if subtitles:
        for packet in cues.demux():
            if packet.size:
                packet.stream = text
                out.mux(packet)
    out.close()
    return path


def plane_view(plane, dtype):
    per_row = plane.line_size // np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype, plane.height * per_row).reshape(plane.height, per_row)
    return rows[:, :plane.width]
