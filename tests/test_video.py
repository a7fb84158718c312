"""Video in, video out (rbqe_tf.video): tiny clips made here with PyAV, a stand-in enhancer
(exit 0 on even frames, +0.05 on the others) so that what the output must hold is known
exactly; one test with the tiny network and one through the command line."""
import json
import os
import re
import subprocess
import sys
import types
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from rbqe_tf import batch, video  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_X265 = "libx265" in av.codecs_available
COLOUR = ("colorspace", "color_primaries", "color_trc", "color_range")
needs_x265 = pytest.mark.skipif(not HAS_X265, reason="PyAV's FFmpeg has no libx265")


def _clip(path, codec="libx264", pix_fmt="yuv420p", frames=8, size=(64, 48), rate=15,
          time_base=None, pts=None, audio=True, subtitles=False, rotation=None, bt709=False,
          aspect=None):
    """A small clip of moving smooth noise (+ 8 kHz AAC silence, + an SRT track, + BT.709
    limited-range colour tags, + a sample aspect ratio)."""
    rng = np.random.default_rng(0)
    out = av.open(str(path), "w", format="h264" if str(path).endswith(".264") else None)
    stream = out.add_stream(codec, rate=rate, options={"x265-params": "log-level=error"}
                            if codec == "libx265" else {})
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
            view = _view(plane, np.uint16 if bits > 8 else np.uint8)
            view[...] = np.clip(np.round(values * 2 ** (bits - 8)), 0, 2 ** bits - 1)
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


def _view(plane, dtype):
    per_row = plane.line_size // np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype, plane.height * per_row).reshape(plane.height, per_row)
    return rows[:, :plane.width]


def _decoded(path):
    """(frames' planes as arrays, times in s, rotation, format, colour range, stream)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        dtype = np.uint16 if frames[0].format.components[0].bits > 8 else np.uint8
        return types.SimpleNamespace(
            planes=[[_view(p, dtype).copy() for p in f.planes] for f in frames],
            times=[f.time for f in frames], rotation=frames[0].rotation,
            format=frames[0].format.name, color_range=frames[0].color_range,
            colour=[getattr(frames[0], name) for name in COLOUR],
            rate=stream.guessed_rate, codec=stream.codec_context.name,
            aspect=stream.sample_aspect_ratio)


def _packets(path, kind):
    with av.open(str(path)) as container:
        return [(round(float(p.pts * p.time_base), 3), bytes(p))
                for p in container.demux(getattr(container.streams, kind)[0]) if p.size]


class StandIn:
    """Exit 0 on even frames, else Y + 0.05 (exit 1); records the planes it was given."""

    def __init__(self):
        self.seen = []

    def __call__(self, y):
        self.seen.append(y)
        k = 0 if len(self.seen) % 2 == 1 else 1
        out = y if k == 0 else np.clip(y + np.float32(0.05), 0, 1)
        return types.SimpleNamespace(image=out, exit=k, scores=[], gains=[0.1 * k, 0.2],
                                     ms=1.0)


def _enhance(src, target, enhancer=None, **options):
    enhancer = enhancer or StandIn()
    report = video.enhance_video(str(src), str(target),
                                 lambda codec: (enhancer, f"stand-in for {codec}"), **options)
    return report, enhancer


def _expected_y(y, k, bits=8):
    """What the stand-in's exit k makes of a decoded Y plane."""
    if k == 0:
        return y
    scale = np.float32(255 << (bits - 8))
    out = np.clip(y.astype(np.float32) / scale + np.float32(0.05), 0, 1)
    return np.minimum(np.round(out * scale), 2 ** bits - 1).astype(y.dtype)


def test_h264_clip_keeps_frames_timestamps_audio_chroma_and_rotation(tmp_path, capsys):
    src = _clip(tmp_path / "clip.mp4", time_base=Fraction(1, 15360),
                pts=[1024 * i for i in range(8)], rotation=90, bt709=True)
    target = tmp_path / "out" / "clip.mkv"
    report, _ = _enhance(src, target, progress_every=4)
    before, after = _decoded(src), _decoded(target)
    assert after.codec == "ffv1" and len(after.planes) == len(before.planes) == 8
    assert after.times == pytest.approx(before.times, abs=5e-4)  # Matroska: milliseconds
    assert after.rate == before.rate == 15 and after.rotation == before.rotation == 90
    assert after.format == before.format == "yuv420p"
    assert after.colour == before.colour == [1, 1, 1, 1]  # BT.709, limited range
    for k, (old, new) in enumerate(zip(before.planes, after.planes)):
        np.testing.assert_array_equal(new[1], old[1])  # chroma exactly (ffv1 is lossless)
        np.testing.assert_array_equal(new[2], old[2])
        np.testing.assert_array_equal(new[0], _expected_y(old[0], k % 2))
    assert _packets(target, "audio") == _packets(src, "audio")  # copied, timestamps too
    assert report["exits"] == [0, 1] * 4 and report["exit_histogram"] == [4, 4]
    assert report["streams_copied"] == ["#1 audio aac"] and report["streams_dropped"] == []
    progress = [line for line in capsys.readouterr().out.splitlines() if "frame " in line]
    assert len(progress) == 2 and "frame 4/8" in progress[0]

    sidecar = json.loads((tmp_path / "out" / "clip.mkv.json").read_text())
    assert sidecar == json.loads(json.dumps(report))
    assert sidecar["frames"] == 8 and sidecar["pts"] == [1024 * i for i in range(8)]
    assert sidecar["time_base"] == "1/15360" and sidecar["stream_codec"] == "h264"
    assert sidecar["model"] == "stand-in for h264" and sidecar["gains"][1] == [0.1, 0.2]
    assert video.summary(report).startswith("8 frames, exits 0:4 1:4 (h264 stream: stand-in")


@needs_x265
def test_10_bit_hevc_keeps_its_bit_depth(tmp_path):
    src = _clip(tmp_path / "clip.mkv", codec="libx265", pix_fmt="yuv420p10le", audio=False)
    report, enhancer = _enhance(src, tmp_path / "out.mkv")
    before, after = _decoded(src), _decoded(tmp_path / "out.mkv")
    assert after.format == before.format == "yuv420p10le"
    assert max(p[0].max() for p in before.planes) > 255
    # The network sees 10-bit Y on the 8-bit scale: 940 is 235/255.
    np.testing.assert_allclose(enhancer.seen[0], before.planes[0][0] / 1020.0, atol=1e-6)
    for k, (old, new) in enumerate(zip(before.planes, after.planes)):
        np.testing.assert_array_equal(new[0], _expected_y(old[0], k % 2, bits=10))
        np.testing.assert_array_equal(new[1:], old[1:])
    assert report["stream_codec"] == "hevc"


def test_variable_frame_rate_and_subtitles_are_kept(tmp_path):
    pts = [0, 50, 120, 150, 300, 310, 400, 520]
    src = _clip(tmp_path / "vfr.mkv", time_base=Fraction(1, 1000), pts=pts, subtitles=True)
    report, _ = _enhance(src, tmp_path / "out.mkv")
    after = _decoded(tmp_path / "out.mkv")
    assert after.times == pytest.approx([t / 1000 for t in pts], abs=1e-9)
    assert report["pts"] == pts
    assert _packets(tmp_path / "out.mkv", "subtitles") == [(0.0, b"Hello"), (0.3, b"World")]
    assert _packets(tmp_path / "out.mkv", "audio") == _packets(src, "audio")


@pytest.mark.parametrize("codec", ["libx264", pytest.param("libx265", marks=needs_x265)])
def test_playable_outputs_at_a_crf(tmp_path, codec):
    src = _clip(tmp_path / "clip.mp4", pix_fmt="yuv444p", aspect=Fraction(4, 3))
    report, _ = _enhance(src, tmp_path / "out.mkv", video_codec=codec, crf=30)
    after = _decoded(tmp_path / "out.mkv")
    assert len(after.planes) == 8 and after.format == "yuv444p"
    assert after.aspect == Fraction(4, 3)
    assert after.codec == {"libx264": "h264", "libx265": "hevc"}[codec]
    assert after.times == pytest.approx(_decoded(src).times, abs=5e-4)
    assert report["video_codec"] == codec and report["crf"] == 30


@pytest.mark.parametrize("pix_fmt", ["yuv422p", "yuv444p", "gray"])
def test_other_chroma_layouts_are_kept(tmp_path, pix_fmt):
    src = _clip(tmp_path / "clip.mkv", codec="ffv1", pix_fmt=pix_fmt, audio=False)
    _enhance(src, tmp_path / "out.mkv")
    before, after = _decoded(src), _decoded(tmp_path / "out.mkv")
    assert after.format == before.format == pix_fmt
    for k, (old, new) in enumerate(zip(before.planes, after.planes)):
        np.testing.assert_array_equal(new[0], _expected_y(old[0], k % 2))
        for p in range(1, len(old)):
            np.testing.assert_array_equal(new[p], old[p])


def test_raw_stream_gets_timestamps_from_its_frame_rate(tmp_path):
    src = _clip(tmp_path / "clip.264", audio=False)
    assert all(t is None for t in _decoded(src).times)
    _enhance(src, tmp_path / "out.mkv")
    assert _decoded(tmp_path / "out.mkv").times == pytest.approx(
        [i / 15 for i in range(8)], abs=5e-4)


def test_full_range_mjpeg_stays_full_range(tmp_path):
    src = _clip(tmp_path / "clip.avi", codec="mjpeg", pix_fmt="yuvj420p", audio=False)
    _enhance(src, tmp_path / "out.mkv")
    before, after = _decoded(src), _decoded(tmp_path / "out.mkv")
    assert (after.format, after.color_range) == ("yuv420p", 2)  # ffv1: yuv + full range
    np.testing.assert_array_equal(after.planes[0][0], before.planes[0][0])  # exit 0
    np.testing.assert_array_equal(after.planes[1][1:], before.planes[1][1:])


def test_bad_videos_are_one_line_errors_and_leave_nothing(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    data = _clip(tmp_path / "in" / "good.mp4").read_bytes()
    (tmp_path / "in" / "truncated.mp4").write_bytes(data[: len(data) // 2])  # no index
    (tmp_path / "in" / "empty.mkv").write_bytes(b"")
    (tmp_path / "in" / "text.mov").write_text("not a video")
    broken = bytearray(data)
    broken[len(data) * 2 // 5:len(data) * 3 // 5] = bytes(len(data) // 5)  # frames zeroed
    (tmp_path / "in" / "broken.mp4").write_bytes(bytes(broken))
    inputs = batch.expand_inputs([str(tmp_path / "in")],
                                 extensions=batch.IMAGE_EXTENSIONS + batch.VIDEO_EXTENSIONS)
    assert [i.name for i in inputs.files] == ["broken", "empty", "good", "text", "truncated"]

    def write(path, target, overwrite):
        return video.summary(_enhance(path, target, overwrite=overwrite)[0])

    out = tmp_path / "out"
    assert batch.enhance_files(inputs.files, str(out), None, None, video=write) == 4
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 4 and "Traceback" not in captured.err
    for name in ["broken.mp4", "empty.mkv", "text.mov", "truncated.mp4"]:
        assert sum(name in line and ": error: " in line for line in errors) == 1, errors
    assert "good.mkv" in captured.out and "1 enhanced, 4 failed" in captured.out
    assert sorted(os.listdir(out)) == ["good.mkv", "good.mkv.json"]  # no temporary files


class Interrupted(StandIn):
    """Ctrl-C at the fourth frame."""

    def __call__(self, y):
        if len(self.seen) == 3:
            raise KeyboardInterrupt
        return super().__call__(y)


def test_an_interrupted_run_leaves_no_output(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _enhance(_clip(tmp_path / "clip.mp4"), tmp_path / "out" / "clip.mkv", Interrupted())
    assert os.listdir(tmp_path / "out") == []


def test_outputs_are_never_replaced_without_overwrite(tmp_path, capsys):
    src = _clip(tmp_path / "clip.mkv")
    original = src.read_bytes()

    def write(path, target, overwrite):
        return video.summary(_enhance(path, target, overwrite=overwrite)[0])

    # The input's own folder as --out: clip.mkv would be its own output.
    assert batch.enhance_files([str(src)], str(tmp_path), None, None, overwrite=True,
                               video=write) == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert src.read_bytes() == original

    out = tmp_path / "out"
    assert batch.enhance_files([str(src)], str(out), None, None, video=write) == 0
    first = (out / "clip.mkv").stat().st_mtime_ns
    assert batch.enhance_files([str(src)], str(out), None, None, video=write) == 1
    assert "exists (use --overwrite to replace it)" in capsys.readouterr().err
    assert (out / "clip.mkv").stat().st_mtime_ns == first
    (out / "clip.mkv").unlink()  # the sidecar alone also blocks a run
    with pytest.raises(video.VideoError, match=r"clip.mkv.json: exists"):
        _enhance(src, out / "clip.mkv")
    assert not (out / "clip.mkv").exists()
    assert batch.enhance_files([str(src)], str(out), None, None, overwrite=True,
                               video=write) == 0
    assert len(_decoded(out / "clip.mkv").planes) == 8


def test_model_follows_the_stream_with_a_documented_fallback():
    assert video.model_for_stream("h264", {"jpeg"}) == ("jpeg", None)
    assert video.model_for_stream("mjpeg", {"jpeg"}) == ("jpeg", None)
    assert video.model_for_stream("hevc", {"jpeg"}) == ("jpeg", "no hevc model ships yet")
    assert video.model_for_stream("hevc", {"jpeg", "hevc"}) == ("hevc", None)


def test_folders_pick_videos_up_only_where_asked(tmp_path):
    for name in ["a.png", "b.MP4", "c.265", "d.txt"]:
        (tmp_path / name).write_bytes(b"")
    both = batch.expand_inputs([str(tmp_path)],
                               extensions=batch.IMAGE_EXTENSIONS + batch.VIDEO_EXTENSIONS)
    assert [i.name for i in both.files] == ["a", "b", "c"]
    assert [i.name for i in batch.expand_inputs([str(tmp_path)]).files] == ["a"]  # export.run


@pytest.mark.slow
def test_the_network_decides_per_frame(tmp_path):
    from test_export import tiny_model  # TensorFlow from here on

    from rbqe_tf.enhancer import Enhancer
    enhancer = Enhancer(tiny_model(), "jpeg")
    src = _clip(tmp_path / "clip.mp4", size=(64, 64))
    report = video.enhance_video(str(src), str(tmp_path / "out.mkv"),
                                 lambda codec: (enhancer, "tiny"))
    assert all(1 <= k <= 5 for k in report["exits"]) and report["frames"] == 8
    assert all(len(s) == min(k, 4) for s, k in zip(report["scores"], report["exits"]))
    left = video.enhance_video(str(src), str(tmp_path / "left.mkv"),
                               lambda codec: (lambda y: enhancer(y, exit=0), "tiny"))
    assert left["exit_histogram"] == [8]
    before, after = _decoded(src), _decoded(tmp_path / "left.mkv")
    for old, new in zip(before.planes, after.planes):
        for p in range(3):
            np.testing.assert_array_equal(new[p], old[p])


def _cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "rbqe_tf.enhance", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


def test_cli_flags_repeat_the_modules_choices():
    """rbqe_tf.enhance repeats them so that --help needs no PyAV."""
    proc = _cli("--help")
    assert re.search(r"--video_codec: <(.*?)>", proc.stdout).group(1).split("|") == list(
        video.VIDEO_CODECS)
    assert int(re.search(r"--crf:.*?\(default: '(\d+)'\)", proc.stdout, re.S).group(1)) \
        == video.DEFAULT_CRF



def test_crf_without_a_lossy_codec_is_a_usage_error(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    usage = _cli(tmp_path / "a.mp4", "--out", tmp_path / "out", "--crf", "20")
    assert usage.returncode == 2 and usage.stderr.strip().splitlines() == [
        "error: --crf applies to --video_codec libx264 or libx265"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_enhances_a_video_with_the_stream_model(tmp_path):
    from test_export import tiny_model
    weights = tmp_path / "tiny.keras"
    tiny_model().save(weights)
    folder = tmp_path / "in"
    folder.mkdir()
    _clip(folder / "clip.mp4")
    (folder / "notes.txt").write_text("")
    out = tmp_path / "out"
    proc = _cli(folder, "--out", out, "--weights", weights, "--video_codec", "libx264",
                "--crf", "28")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "clip.mp4:" in line)
    assert re.search(r"8 frames, exits .* \(h264 stream: jpeg model\), [\d.]+ fps, libx264 "
                     r"-> .*clip\.mkv$", line), line
    assert len(_decoded(out / "clip.mkv").planes) == 8
    assert json.loads((out / "clip.mkv.json").read_text())["crf"] == 28
    again = _cli(folder / "clip.mp4", "--out", out, "--weights", weights)
    assert again.returncode == 1 and "exists (use --overwrite" in again.stderr
