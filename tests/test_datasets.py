"""datasets: JPEG/HEVC builds, manifest contract, resumability and CLI failure modes."""
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rbqe_tf import compression
from rbqe_tf.build_pairs import LOCK_NAME, BuildError, build, parse_levels
from rbqe_tf.color import rgb_to_y_uint8
from rbqe_tf.compression import CodecError, compress_hevc, compress_jpeg, encode_hevc
from rbqe_tf.metrics import psnr
from rbqe_tf.pairs_manifest import FIELDS, manifest_path, read_manifest
from rbqe_tf.sources import to_y

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSIC5 = SHARED_DATA / "val" / "classic5"
README_JPEG_PSNR = {10: 27.82, 20: 30.12, 30: 31.48, 40: 32.43, 50: 33.20}
FFMPEG_PROBLEM = compression.ffmpeg_problem()
needs_ffmpeg = pytest.mark.skipif(FFMPEG_PROBLEM is not None,
                                  reason=f"HEVC tests need ffmpeg+libx265: {FFMPEG_PROBLEM}")


def _scene(height, width, seed):
    """Deterministic photo-like gray image: gradients, edges and blurred texture."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = 60 + 0.5 * rows + 40 * np.sin(cols / 7.0) * (rows > height // 3)
    image += cv2.GaussianBlur(rng.normal(0, 40, (height, width)), (0, 0), 1.2)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _tree_state(out):
    return {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(out.rglob("*")) if p.is_file()}


def _cli(args, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "datasets.build", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_to_y_conventions():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert to_y(gray) is gray
    assert np.array_equal(to_y(gray.astype(np.uint16) * 257), gray)
    rgb = np.random.default_rng(0).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    assert np.array_equal(to_y(rgb), rgb_to_y_uint8(rgb))
    assert np.array_equal(to_y(np.dstack([rgb, np.zeros((8, 9), np.uint8)])), to_y(rgb))
    assert np.array_equal(to_y(rgb.astype(np.uint16) * 257), to_y(rgb))
    assert to_y(np.full((2, 2, 3), 255, np.uint8)).max() == 235  # studio range


def test_parse_levels():
    assert parse_levels("jpeg", None) == [10, 20, 30, 40, 50]
    assert parse_levels("hevc", ["37", "22", "22"]) == [22, 37]
    with pytest.raises(BuildError, match="outside 0..51"):
        parse_levels("hevc", ["52"])
    with pytest.raises(BuildError, match="not an integer"):
        parse_levels("jpeg", ["ten"])


@pytest.mark.slow
@pytest.mark.skipif(not CLASSIC5.is_dir(), reason=f"shared data not found at {CLASSIC5}")
def test_classic5_jpeg_sanity_and_manifest_contract(tmp_path):
    out = tmp_path / "out"
    summary = build(CLASSIC5, out, "jpeg", workers=2)
    assert summary.built == 25 and not summary.skipped
    rows = read_manifest(out)
    assert len(rows) == 25
    for quality, want in README_JPEG_PSNR.items():
        mean = np.mean([r["psnr"] for r in rows if r["level"] == quality])
        assert mean == pytest.approx(want, abs=0.01), quality
        assert summary.per_level[quality][1] == pytest.approx(mean)
    row = next(r for r in rows if r["stem"] == "lena" and r["level"] == 10)
    assert tuple(row) == FIELDS
    assert (row["source"], row["gt"], row["path"]) == ("lena.png", "gt/lena.png",
                                                       "jpeg/10/lena.png")
    gt = cv2.imread(str(out / row["gt"]), cv2.IMREAD_UNCHANGED)
    decoded = cv2.imread(str(out / row["path"]), cv2.IMREAD_UNCHANGED)
    assert gt.dtype == decoded.dtype == np.uint8 and gt.shape == (row["height"], row["width"])
    expected, n_bytes = compress_jpeg(gt, 10)
    assert np.array_equal(decoded, expected) and row["bytes"] == n_bytes
    assert row["bpp"] == pytest.approx(n_bytes * 8 / gt.size)
    assert row["psnr"] == pytest.approx(psnr(gt, decoded))


@pytest.mark.slow
@needs_ffmpeg
def test_hevc_build_uses_requested_qp_and_shares_out_with_jpeg(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _write(src / "a.png", _scene(64, 96, 1))
    _write(src / "sub" / "b.png", _scene(45, 67, 2))  # odd sizes, nested stem
    for qp in (22, 42):  # the encoder's own report, not just what we asked for
        assert encode_hevc(_scene(45, 67, 2), qp)[1] == qp
    summary = build(src, out, "hevc", workers=2)
    assert summary.built == 10 and not summary.skipped
    assert build(src, out, "jpeg", levels=["50"]).built == 2
    rows = read_manifest(out)
    assert sorted({(r["codec"], r["level"]) for r in rows}) == (
        [("hevc", qp) for qp in (22, 27, 32, 37, 42)] + [("jpeg", 50)])
    hevc = [r for r in rows if r["codec"] == "hevc"]
    means = [np.mean([r["psnr"] for r in hevc if r["level"] == qp]) for qp in (22, 27, 32, 37, 42)]
    assert all(a > b for a, b in zip(means, means[1:])), means
    b = next(r for r in hevc if r["stem"] == "sub/b" and r["level"] == 32)
    assert (b["gt"], b["path"], b["height"], b["width"]) == ("gt/sub/b.png",
                                                             "hevc/32/sub/b.png", 45, 67)
    decoded = cv2.imread(str(out / b["path"]), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (45, 67)
    assert np.array_equal(decoded, compress_hevc(_scene(45, 67, 2), 32)[0])  # deterministic


def test_hevc_qp_mismatch_is_an_error(monkeypatch):
    monkeypatch.setattr(compression, "encode_hevc", lambda y, qp: (b"", qp - 3.0))
    with pytest.raises(CodecError, match="not the requested 32"):
        compress_hevc(np.zeros((8, 8), np.uint8), 32)


def test_resume_is_a_no_op_and_repairs_leftovers(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _write(src / "gray.png", _scene(40, 56, 3))
    _write(src / "colour.png", np.dstack([_scene(33, 41, s) for s in (4, 5, 6)]))
    _write(src / "deep16.png", _scene(24, 24, 7).astype(np.uint16) * 257)
    first = build(src, out, "jpeg", levels=["10", "50"])
    assert first.built == 6 and first.already_done == 0
    before = _tree_state(out)

    second = build(src, out, "jpeg", levels=["10", "50"])
    assert second.built == 0 and second.already_done == 6
    assert _tree_state(out) == before  # same bytes, same mtimes

    (out / "jpeg" / "10" / ".tmp-abc123.png").write_bytes(b"half")  # killed mid-write
    (out / ".tmp-xyz.jsonl").write_text("half")
    (out / "jpeg" / "50" / "gray.png").unlink()  # row whose file is missing
    text = manifest_path(out).read_text()
    lines = text.splitlines(keepends=True)
    dropped = next(line for line in lines if '"colour"' in line and '"level": 10' in line)
    # killed after the file was renamed but before its row was appended, then torn append
    manifest_path(out).write_text("".join(line for line in lines if line != dropped)
                                  + '{"stem": "to')
    third = build(src, out, "jpeg", levels=["10", "50"])
    assert third.built == 2 and not third.skipped
    assert not list(out.rglob(".tmp-*"))
    assert manifest_path(out).read_text() == text
    assert _tree_state(out).keys() == before.keys()


def test_duplicate_stems_and_lock(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _write(src / "x.png", _scene(16, 16, 8))
    _write(src / "x.bmp", _scene(16, 16, 9))
    summary = build(src, out, "jpeg", levels=["30"])
    assert summary.built == 1 and len(summary.skipped) == 1 and "x.png" in summary.skipped[0]
    with open(out / LOCK_NAME, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BuildError, match="another build"):
            build(src, out, "jpeg", levels=["30"])


def test_missing_ffmpeg_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "apt-get install ffmpeg" in compression.ffmpeg_problem()
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho ' V....D libx264  H.264'\n")
    fake.chmod(0o755)
    assert "no libx265" in compression.ffmpeg_problem()


@pytest.mark.slow
def test_cli_unreadable_source_and_missing_ffmpeg(tmp_path):
    src = tmp_path / "src"
    _write(src / "good.png", _scene(20, 20, 10))
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    done = _cli(["--src", str(src), "--out", str(tmp_path / "out"), "--codec", "jpeg",
                 "--levels", "10"])
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    bad_lines = [line for line in done.stdout.splitlines() if "bad.png" in line]
    assert len(bad_lines) == 1 and "not a readable image" in bad_lines[0]
    assert "built 1 pair(s)" in done.stdout
    assert [r["stem"] for r in read_manifest(tmp_path / "out")] == ["good"]

    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    done = _cli(["--src", str(src), "--out", str(tmp_path / "out2"), "--codec", "hevc"],
                env={"PATH": str(empty_path)})
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "apt-get install ffmpeg" in errors[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "out2").exists()
