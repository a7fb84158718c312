"""Early-exit enhancement: the Python API and the command line."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from rbqe_tf import color, tiling
from rbqe_tf.enhancer import Enhancer, enhance
from rbqe_tf.model import WeightsError, build_model, load_model


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny")


@pytest.fixture(scope="module")
def weights(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.keras"
    tiny.save(path)
    return str(path)


@pytest.fixture(scope="module")
def enhancer(tiny):
    return Enhancer(tiny, "jpeg")


def _rng_image(shape, dtype=np.uint8, seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, info.max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("shape,dtype", [
    ((37, 53), np.uint8), ((64, 32, 3), np.uint8), ((33, 31, 4), np.uint8),
    ((40, 70), np.uint16), ((1, 1), np.uint8), ((5, 3, 3), np.uint16)])
def test_any_size_mode_and_depth_round_trip(enhancer, shape, dtype):
    image = _rng_image(shape, dtype)
    result = enhancer(image)
    assert result.image.shape == image.shape and result.image.dtype == image.dtype
    assert 1 <= result.exit <= 5 and len(result.scores) == min(result.exit, 4)
    if image.ndim == 3 and image.shape[2] == 4:
        np.testing.assert_array_equal(result.image[..., 3], image[..., 3])


def test_forced_exit_equals_the_monolithic_exit(tiny, enhancer):
    image = _rng_image((64, 96), seed=3)
    y = image.astype(np.float32)[None, :, :, None] / 255
    for k in (1, 3, 5):
        result = enhancer(image, exit=k)
        expected = np.round(np.clip(np.asarray(tiny.exit_model(k)(y))[0, :, :, 0], 0, 1) * 255)
        assert result.exit == k and result.scores == []
        assert np.abs(result.image.astype(int) - expected).max() <= 1


def test_threshold_decides_the_exit(tiny):
    image = _rng_image((64, 64), seed=4)
    assert Enhancer(tiny, "jpeg", threshold=0.0)(image).exit == 1
    never = Enhancer(tiny, "hevc", threshold=1.01)(image)
    assert never.exit == 5 and len(never.scores) == 4
    assert all(0.0 <= s <= 1.0 for s in never.scores)


def test_colour_keeps_chroma(tiny):
    image = _rng_image((48, 40, 3), seed=5)
    out = enhance(image, tiny, exit=2).image
    cbcr_in = color.rgb_to_ycbcr(image / 255.0)[..., 1:]
    cbcr_out = color.rgb_to_ycbcr(out / 255.0)[..., 1:]
    # Only 8-bit rounding and RGB clipping separate them.
    assert np.median(np.abs(cbcr_in - cbcr_out)) < 1.0 / 255
    y_in = color.rgb_to_ycbcr(image / 255.0)[..., 0]
    y_ref = np.asarray(tiny.exit_model(2)(np.pad(y_in, ((0, 16), (0, 24)), "symmetric")
                                          [None, :, :, None].astype(np.float32)))[0, :48, :40, 0]
    y_out = color.rgb_to_ycbcr(out / 255.0)[..., 0]
    assert np.median(np.abs(y_out - np.clip(y_ref, 0, 1))) < 1.0 / 255


# ---------------------------------------------------------------- the padding rule
# docs/method.md, "Tiling and padding": pad at the bottom/right with NumPy's "symmetric"
# mode (edge pixel repeated, then mirrored) to the size the network needs, run, crop back.
# Each model below reads pixels beyond the image's border, so the padding mode shows.
PAD_MODES = ("symmetric", "reflect", "edge", "constant")


def _padded_length(size, tile, overlap, multiple):
    """The padded extent of one axis, written out from the rule: the next multiple of
    ``multiple`` for a side ≤ ``tile``; else as far as the last of the tiles reaches
    (tiles of ``tile`` pixels starting every ``tile − 2·overlap`` pixels)."""
    if size <= tile:
        return -(-size // multiple) * multiple
    step = tile - 2 * overlap
    tiles = 1 + -(-(size - tile) // step)
    return (tiles - 1) * step + tile


def _correlate(image, kernel):
    """2-D cross-correlation, zero padding, output the size of ``image``."""
    r = kernel.shape[0] // 2
    padded = np.pad(image, r)
    out = np.zeros_like(image)
    for di in range(kernel.shape[0]):
        for dj in range(kernel.shape[1]):
            out += kernel[di, dj] * padded[di:di + image.shape[0], dj:dj + image.shape[1]]
    return out


# An off-centre 5×5 kernel per exit: exit k reads up to 2 pixels past the border.
_KERNELS = [np.random.default_rng(k).normal(size=(5, 5)).astype(np.float32)
            for k in range(1, 6)]


def _function_stages(tile):
    """A five-exit 'network' in NumPy (tiling.early_exit's ``stages``): exit k is the tile
    correlated with kernel k."""
    for kernel in _KERNELS:
        yield _correlate(tile, kernel)


@pytest.mark.parametrize("shape,tile,overlap", [((45, 70), 512, 32),  # one tile
                                                ((150, 130), 64, 16)])  # 4×4 tiles
def test_tiles_pad_symmetric_then_crop(shape, tile, overlap):
    y = np.random.default_rng(0).random(shape).astype(np.float32)
    rows, cols = (tiling.layout(n, tile, overlap, 32) for n in shape)
    assert (rows.padded, cols.padded) == tuple(_padded_length(n, tile, overlap, 32)
                                               for n in shape)
    for k in (1, 4):
        out, exits, _ = tiling.early_exit(y, rows, cols, _function_stages, None, 8, 1.01, 5,
                                          exit=k)
        assert exits == [k] and out.shape == shape
        expected = {mode: _correlate(np.pad(y, ((0, rows.padded - shape[0]),
                                                (0, cols.padded - shape[1])), mode),
                                     _KERNELS[k - 1])[:shape[0], :shape[1]]
                    for mode in PAD_MODES}
        np.testing.assert_array_equal(out, expected["symmetric"])
        for mode in PAD_MODES[1:]:  # the test can tell the modes apart
            assert np.abs(out - expected[mode]).max() > 0.01, mode


def test_enhancer_pads_symmetric_then_crops(tiny_model):
    """The Keras Enhancer on a non-identity network: each exit of a 45×70 image is the
    monolithic exit of the image padded to 64×96 as the rule says, cropped back."""
    y = np.random.default_rng(1).random((45, 70)).astype(np.float32) * 0.5 + 0.25
    enhancer = Enhancer(tiny_model, threshold=1.01)
    out, taken, _ = enhancer.enhance_y(y, exit=2)
    assert taken == 2 and out.shape == y.shape
    assert np.abs(out - y).max() > 0.05  # far from the identity
    expected = {}
    for mode in PAD_MODES:
        padded = np.pad(y, ((0, 64 - 45), (0, 96 - 70)), mode)[None, :, :, None]
        expected[mode] = np.clip(np.asarray(tiny_model.exit_model(2)(padded))[0, :45, :70, 0],
                                 0, 1)
    np.testing.assert_allclose(out, expected["symmetric"], atol=1e-6)
    for mode in PAD_MODES[1:]:
        assert np.abs(out - expected[mode]).max() > 0.01, mode


def test_bad_weights_are_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        load_model(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="junk.keras: not a .keras archive"):
        load_model(junk)
    with pytest.raises(WeightsError, match="expected a .keras"):
        load_model(tmp_path / "model.h5")


def _run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "rbqe_tf.enhance", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def _mixed_folder(folder):
    folder.mkdir()
    cv2.imwrite(str(folder / "gray.png"), _rng_image((45, 61)))
    cv2.imwrite(str(folder / "rgb.png"), _rng_image((32, 33, 3)))
    cv2.imwrite(str(folder / "rgba.png"), _rng_image((20, 70, 4)))
    cv2.imwrite(str(folder / "deep.png"), _rng_image((31, 64), np.uint16))
    ok, jpg = cv2.imencode(".jpg", _rng_image((50, 50, 3)))
    (folder / "photo.jpg").write_bytes(jpg.tobytes())
    png = (folder / "gray.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.tif").write_text("not an image")
    return folder


def test_cli_processes_a_mixed_folder(tmp_path, weights):
    inputs = _mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    proc = _run_cli(inputs, "--out", out, "--weights", weights)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    good = ["deep", "gray", "photo", "rgb", "rgba"]
    assert sorted(p.stem for p in out.iterdir()) == good
    for name in good:
        src = cv2.imread(str(next(inputs.glob(name + ".*"))), cv2.IMREAD_UNCHANGED)
        dst = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert dst.shape == src.shape and dst.dtype == src.dtype
        assert f"{name}." in proc.stdout and "exit " in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 3
    for name in ["truncated.png", "empty.png", "notes.tif"]:
        assert sum(name in line for line in errors) == 1
    assert "5 enhanced, 3 failed" in proc.stdout

    # Second run: outputs exist and are kept unless --overwrite.
    before = (out / "gray.png").read_bytes()
    again = _run_cli(inputs / "gray.png", "--out", out, "--weights", weights, "--exit", "1")
    assert again.returncode == 1 and "exists (use --overwrite" in again.stderr
    assert (out / "gray.png").read_bytes() == before
    forced = _run_cli(inputs / "gray.png", "--out", out, "--weights", weights, "--exit", "1",
                      "--overwrite")
    assert forced.returncode == 0 and "exit 1" in forced.stdout


def test_cli_never_overwrites_inputs_and_reports_usage_errors(tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _rng_image((32, 32)))
    (folder / "notes.txt").write_text("not an image")
    original = (folder / "a.png").read_bytes()
    calibrated = tmp_path / "calibrated.keras"  # τ as calibrated for the shipped model
    shutil.copy(weights, calibrated)
    (tmp_path / "calibrated.thresholds.json").write_text(
        json.dumps({"jpeg": {"threshold": 0.4698486030101776}}))
    proc = _run_cli(folder, "--out", folder, "--weights", calibrated, "--overwrite")
    assert proc.returncode == 1 and "would overwrite an input" in proc.stderr
    assert (folder / "a.png").read_bytes() == original
    lines = proc.stdout.splitlines()
    assert lines[0] == "jpeg: early exit at quality score >= 0.4698 (calibrated)"  # not 0.470
    assert lines[1] == f"skipped 1: {folder}/notes.txt (not an image file)"

    for args, message in [
        ((folder / "a.png", "--out", tmp_path / "o", "--codec", "hevc"),
         "no trained hevc model ships"),
        ((folder / "a.png", "--out", tmp_path / "o", "--weights", tmp_path / "no.keras"),
         "no such file"),
        ((folder / "a.png", "--out", folder / "a.png" / "x", "--weights", weights),
         "cannot create output folder"),
    ]:
        proc = _run_cli(*args)
        assert proc.returncode == 2 and message in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
