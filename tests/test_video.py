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

from clips import COLOUR, make_clip as _clip, plane_view as _view  # noqa: E402
from rbqe_tf import batch, metrics, video  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_X265 = "libx265" in av.codecs_available
needs_x265 = pytest.mark.skipif(not HAS_X265, reason="PyAV's FFmpeg has no libx265")


def _pan(photo, size):
    """Frame number → Y of a pan over ``photo``: the window moves 2 pixels right, 1 down."""
    return lambda i: photo[i:i + size[1], 2 * i:2 * i + size[0]]


def _camera():
    from rbqe_tf.sources import reference_images
    return reference_images()["camera"]


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
    """``enhance_video`` with the stand-in; every frame decided unless told otherwise."""
    options.setdefault("decide_every", 1)
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


def test_slow_frames_get_a_progress_line_each(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(video, "PROGRESS_SECONDS", 0)  # every frame counts as slow
    _enhance(_clip(tmp_path / "clip.mp4", audio=False), tmp_path / "out.mkv")
    progress = [line for line in capsys.readouterr().out.splitlines() if "frame " in line]
    assert [re.search(r"frame (\d+)/8, [\d.]+ fps, ETA \d:\d\d:\d\d$", line).group(1)
            for line in progress] == [str(n) for n in range(1, 9)]


def test_frames_slower_than_a_second_are_timed_per_frame():
    report = {"frames": 3, "seconds": 90.0, "exit_histogram": [0, 0, 0, 0, 0, 3],
              "decided": [True, False, False], "decide_every": 10, "stream_codec": "h264",
              "model": "m", "streams_dropped": [], "video_codec": "ffv1"}
    assert video.summary(report) == ("3 frames, exits 5:3 in 1 decision (h264 stream: m), "
                                      "30.0 s/frame, ffv1")
    assert video.summary({**report, "seconds": 0.1}).endswith(", 30.0 fps, ffv1")


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
def test_the_network_decides_per_frame(tmp_path, tiny_model):  # TensorFlow from here on
    from rbqe_tf.enhancer import Enhancer
    enhancer = Enhancer(tiny_model, "jpeg")
    src = _clip(tmp_path / "clip.mp4", size=(64, 64))
    report = video.enhance_video(str(src), str(tmp_path / "out.mkv"),
                                 lambda codec: (enhancer, "tiny"), decide_every=1)
    assert all(1 <= k <= 5 for k in report["exits"]) and report["frames"] == 8
    assert all(len(s) == min(k, 4) for s, k in zip(report["scores"], report["exits"]))
    left = video.enhance_video(str(src), str(tmp_path / "left.mkv"),
                               lambda codec: (lambda y, exit=0: enhancer(y, exit), "tiny"))
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
    assert int(re.search(r"--decide_every:.*?\(default: '(\d+)'\)", proc.stdout,
                         re.S).group(1)) == video.DEFAULT_DECIDE_EVERY



def test_crf_without_a_lossy_codec_is_a_usage_error(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    usage = _cli(tmp_path / "a.mp4", "--out", tmp_path / "out", "--crf", "20")
    assert usage.returncode == 2 and usage.stderr.strip().splitlines() == [
        "error: --crf applies to --video_codec libx264 or libx265"]
    never = _cli(tmp_path / "a.mp4", "--out", tmp_path / "out", "--decide_every", "0")
    assert never.returncode == 2 and never.stderr.strip().splitlines() == [
        "error: --decide_every must be at least 1, got 0"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_enhances_a_video_with_the_stream_model(tmp_path, tiny_model):
    weights = tmp_path / "tiny.keras"
    tiny_model.save(weights)
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


class Deciding(StandIn):
    """Decides exit 1 + (frame number % 5) unless an exit is forced; records what it was
    told; gives per-group scores as the TFLite runner does."""

    def __init__(self):
        super().__init__()
        self.told = []

    def __call__(self, y, exit=None):
        self.told.append(exit)
        k = 1 + len(self.seen) % 5 if exit is None else exit
        self.seen.append(y)
        return types.SimpleNamespace(image=y, exit=k, scores=[[0.25, 0.5]], gains=[], ms=1.0)


def test_decisions_are_reused_within_a_shot(tmp_path):
    src = _clip(tmp_path / "pan.mp4", photo=_pan(_camera(), (64, 48)), audio=False)
    report, enhancer = _enhance(src, tmp_path / "out.mkv", Deciding(), decide_every=3)
    assert enhancer.told == [None, 1, 1, None, 4, 4, None, 2]
    assert report["exits"] == [1, 1, 1, 4, 4, 4, 2, 2]
    assert report["decided"] == [True, False, False] * 2 + [True, False]
    assert report["decide_every"] == 3 and report["exit_histogram"] == [0, 3, 2, 0, 3]
    assert report["scores"][0] == [0.25, 0.5]  # the runner's one group, unwrapped
    assert video.summary(report).startswith("8 frames, exits 1:3 2:2 4:3 in 3 decisions (")
    every, _ = _enhance(src, tmp_path / "every.mkv", Deciding())
    assert every["decided"] == [True] * 8 and every["exits"] == [1, 2, 3, 4, 5, 1, 2, 3]
    with pytest.raises(ValueError, match="decide_every must be at least 1"):
        _enhance(src, tmp_path / "never.mkv", decide_every=0)
    deciding = Deciding()  # the default: one decision per DEFAULT_DECIDE_EVERY frames
    default = video.enhance_video(str(src), str(tmp_path / "default.mkv"),
                                  lambda codec: (deciding, "deciding"))
    assert default["decide_every"] == video.DEFAULT_DECIDE_EVERY >= 8
    assert default["decided"] == [True] + [False] * 7 and deciding.told == [None] + [1] * 7


def test_a_scene_cut_is_decided_afresh(tmp_path):
    photo = _camera()
    pan = _pan(photo, (64, 48))
    src = _clip(tmp_path / "cut.mp4", audio=False,
                photo=lambda i: pan(i) if i < 5 else 255 - pan(i))
    report, enhancer = _enhance(src, tmp_path / "out.mkv", Deciding(), decide_every=8)
    assert enhancer.told == [None, 1, 1, 1, 1, None, 1, 1]
    assert report["decided"] == [True] + [False] * 4 + [True, False, False]


def test_ctrl_c_in_a_running_command_leaves_nothing(tmp_path):
    """SIGINT delivered to a process between PyAV calls, as a user's Ctrl-C comes."""
    import signal
    src = _clip(tmp_path / "clip.mp4", frames=30)
    out = tmp_path / "out"
    # A shell that starts a job in the background (CI may) hands it SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler; a user's terminal has it.
    code = ("import signal, sys, time, types\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from rbqe_tf import video\n"
            "def slow(y, exit=None):\n"
            "    print('frame', flush=True)\n"
            "    time.sleep(0.1)\n"
            "    return types.SimpleNamespace(image=y, exit=1, scores=[], gains=[], ms=1.0)\n"
            "video.enhance_video(sys.argv[1], sys.argv[2], lambda codec: (slow, 'slow'))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), str(out / "clip.mkv")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(3):
        assert proc.stdout.readline() == "frame\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert os.listdir(out) == []


def _delta_psnr(reference, before, after):
    """Per frame: PSNR(after, reference) − PSNR(before, reference), Y in 8 bits."""
    return [metrics.psnr(a[0], r) - metrics.psnr(b[0], r)
            for r, b, a in zip(reference, before.planes, after.planes)]


@pytest.mark.slow
def test_cli_enhances_one_second_of_h264_and_hevc_with_the_shipped_model(tmp_path):
    """The issue's CI check: a generated 1-second H.264 and HEVC clip (30 fps, AAC)
    through ``python -m rbqe_tf.enhance`` with the shipped model and its decision."""
    size, photo = (128, 96), _camera()
    reference = [_pan(photo, size)(i) for i in range(30)]
    folder = tmp_path / "in"
    folder.mkdir()
    clips = {"h264": _clip(folder / "h264.mp4", frames=30, size=size, rate=30,
                           photo=_pan(photo, size), options={"crf": "40"})}
    if HAS_X265:
        clips["hevc"] = _clip(folder / "hevc.mp4", "libx265", frames=30, size=size, rate=30,
                              photo=_pan(photo, size),
                              options={"x265-params": "qp=42:log-level=error"})
    proc = _cli(folder, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    for codec, src in clips.items():
        target = tmp_path / "out" / f"{codec}.mkv"
        before, after = _decoded(src), _decoded(target)
        assert len(after.planes) == len(before.planes) == 30
        assert after.times == pytest.approx([i / 30 for i in range(30)], abs=5e-4)
        assert after.times == pytest.approx(before.times, abs=5e-4)
        assert _packets(target, "audio") == _packets(src, "audio")
        delta = _delta_psnr(reference, before, after)
        assert np.mean(delta) >= 0 and min(delta) >= -0.05, delta
        sidecar = json.loads((tmp_path / "out" / f"{codec}.mkv.json").read_text())
        assert sidecar["stream_codec"] == codec and sum(sidecar["exit_histogram"]) == 30
        assert sidecar["model"].startswith("jpeg model")


@pytest.mark.parametrize("command", ["export.run", "rbqe_tf.enhance"])
def test_help_lists_the_video_choices_without_pyav(command):
    """The video choices live beside the file lists (rbqe_tf.batch), so --help works where
    PyAV is missing or slow to import."""
    code = ("import runpy, sys\n"
            "sys.modules['av'] = None\n"
            f"sys.argv = [{command!r}, '--help']\n"
            f"runpy.run_module({command!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(codec in proc.stdout for codec in video.VIDEO_CODECS)


def test_runner_cli_usage_errors_for_video(tmp_path, capsys):
    from export import run
    (tmp_path / "a.mp4").write_bytes(b"")
    assert run.main([str(tmp_path / "a.mp4"), "--models", str(tmp_path), "--out",
                     str(tmp_path / "out"), "--crf", "20"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --crf applies to --video_codec libx264 or libx265")
    assert run.main([str(tmp_path / "a.mp4"), "--models", str(tmp_path), "--out",
                     str(tmp_path / "out"), "--video_codec", "libx264", "--crf", "52"]) == 2
    assert "--crf" in capsys.readouterr().err
    assert run.main([str(tmp_path / "a.mp4"), "--models", str(tmp_path), "--out",
                     str(tmp_path / "out"), "--decide_every", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --decide_every must be at least 1, got 0"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_runner_cli_enhances_a_video(export_tiny, tmp_path, capsys):
    """``python -m export.run clip.mp4``: the TFLite runner decides per frame."""
    from export import run
    folder = export_tiny("fp32")
    src = _clip(tmp_path / "clip.mp4", size=(64, 64))
    out = tmp_path / "out"
    assert run.main([str(src), "--models", folder, "--out", str(out), "--video_codec",
                     "libx264", "--crf", "28"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "clip.mp4:" in x)
    assert re.search(r"8 frames, exits .* \(h264 stream: jpeg export\), [\d.]+ fps, "
                     r"libx264 -> .*clip\.mkv$", line), line
    after = _decoded(out / "clip.mkv")
    assert len(after.planes) == 8 and after.times == pytest.approx(
        _decoded(src).times, abs=5e-4)
    sidecar = json.loads((out / "clip.mkv.json").read_text())
    assert sidecar["crf"] == 28 and all(1 <= k <= 5 for k in sidecar["exits"])
    assert run.main([str(src), "--models", folder, "--out", str(out), "--exit", "2",
                     "--overwrite"]) == 0
    assert json.loads((out / "clip.mkv.json").read_text())["exits"] == [2] * 8
