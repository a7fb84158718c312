"""Robustness: tiles vs one piece, bounded feature caches, fuzzed arrays and files through
the Keras Enhancer, the TFLite runner and both command lines, the quality score on
extreme inputs, and two processes writing into one folder."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export import run as export_run
from rbqe_tf import iqa
from rbqe_tf.enhancer import Enhancer
from rbqe_tf.litert.runner import Runner
from fuzzing import assert_image_or_one_line_error
from rbqe_tf.image_io import read_image, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("weights") / "tiny.keras"
    tiny_model.save(path)
    return str(path)


def _blocky(shape, seed=0):
    """8-bit image with 8×8 blocks plus noise, so exits and scores differ."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.random((shape[0] // 8 + 1, shape[1] // 8 + 1, *shape[2:])),
                   np.ones((8, 8) + (1,) * (len(shape) - 2)))[:shape[0], :shape[1]]
    return np.round(np.clip(base + rng.normal(0, 0.03, shape), 0, 1) * 255).astype(np.uint8)


@pytest.mark.slow
def test_tiled_output_equals_one_piece_within_one_level(tiny_model):
    image = _blocky((150, 130, 3), seed=1)
    whole = Enhancer(tiny_model, threshold=1.01, tile=512)
    tiled = Enhancer(tiny_model, threshold=1.01, tile=64, overlap=16)  # 3×3 tiles
    for k in (1, 3, 5):
        diff = np.abs(whole(image, exit=k).image.astype(int) - tiled(image, exit=k).image)
        assert diff.max() <= 1, (k, diff.max())
    # Pooled tile scores are the stitched image's scores but for the seam patches.
    a, b = whole(image), tiled(image)
    assert a.exit == b.exit == 5 and len(b.scores) == 4
    np.testing.assert_allclose(b.scores, a.scores, atol=0.02)


def _thresholds(scores):
    """Each exit's own score (the first exit reaching it is taken) and one above all (exit 5)."""
    return list(scores) + [1.01]


@pytest.mark.slow
def test_keras_decision_does_not_depend_on_the_feature_cache(tiny_model):
    y = _blocky((140, 150), seed=2).astype(np.float32) / 255
    cached = Enhancer(tiny_model, threshold=1.01, tile=64, overlap=16, cache_mb=1024)
    rerun = Enhancer(tiny_model, tile=64, overlap=16, cache_mb=0)
    assert cached.keep >= 9 and rerun.keep == 0  # 3×3 tiles; 0: one tile at a time
    exits = set()
    for threshold in _thresholds(cached.enhance_y(y)[2]):
        cached.threshold = rerun.threshold = threshold
        a, b = cached.enhance_y(y), rerun.enhance_y(y)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
        exits.add(a[1])
    assert len(exits) >= 3, exits


def test_runner_decision_does_not_depend_on_the_feature_cache(export_tiny):
    folder = export_tiny("fp32")
    y = _blocky((150, 130), seed=3).astype(np.float64) / 255
    cached, rerun = Runner(folder, threshold=1.01), Runner(folder, cache_mb=0)
    assert cached.keep >= 9 and rerun.keep == 0
    for threshold in _thresholds(cached.enhance_y(y)[2][0]):
        cached.threshold = rerun.threshold = threshold
        a, b = cached.enhance_y(y), rerun.enhance_y(y)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]


SHAPES = st.tuples(st.integers(1, 90), st.integers(1, 90), st.sampled_from([0, 1, 2, 3, 4]))
DTYPES = st.sampled_from([np.uint8, np.uint16, np.float32, np.float64])
CONTENT = st.sampled_from(["random", "zero", "max", "extremes", "blocky"])


def _array(shape, dtype, content, seed):
    h, w, c = shape
    full = (h, w) if c == 0 else (h, w, c)
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    rng = np.random.default_rng(seed)
    if content == "zero":
        unit = np.zeros(full)
    elif content == "max":
        unit = np.ones(full)
    elif content == "extremes":
        unit = rng.integers(0, 2, full).astype(float)
    elif content == "blocky" and h > 1 and w > 1:
        unit = _blocky(full, seed) / 255.0
    else:
        unit = rng.random(full)
    return (unit * top).astype(dtype) if top != 1.0 else unit.astype(dtype)


def _check_enhanced(call, image):
    """Either an image of the input's shape and dtype with finite scores, or ValueError
    for a channel count that is not gray/RGB/RGBA."""
    supported = image.ndim == 2 or image.shape[2] in (1, 3, 4)
    if not supported:
        with pytest.raises(ValueError, match="unsupported image shape"):
            call(image)
        return None
    result = call(image)
    assert result.image.shape == image.shape and result.image.dtype == image.dtype
    flat = np.ravel(result.scores)
    assert np.isfinite(flat).all() and ((0 <= flat) & (flat <= 1)).all()
    if image.ndim == 3 and image.shape[2] == 4:
        np.testing.assert_array_equal(result.image[..., 3], image[..., 3])
    return result


@pytest.fixture(scope="module")
def keras_enhancer(tiny_model):
    return Enhancer(tiny_model, tile=64, overlap=16)


@pytest.fixture(scope="module")
def runner(export_tiny):
    return Runner(export_tiny("fp32"), num_threads=1, cache_mb=0)


@settings(max_examples=20, **FUZZ)
@given(shape=SHAPES, dtype=DTYPES, content=CONTENT, seed=st.integers(0, 99))
def test_enhancer_handles_any_shape_dtype_and_content(keras_enhancer, shape, dtype, content,
                                                      seed):
    _check_enhanced(keras_enhancer, _array(shape, dtype, content, seed))


@settings(max_examples=40, **FUZZ)
@given(shape=SHAPES, dtype=DTYPES, content=CONTENT, seed=st.integers(0, 99))
def test_runner_handles_any_shape_dtype_and_content(runner, shape, dtype, content, seed):
    _check_enhanced(runner, _array(shape, dtype, content, seed))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_bad_arrays_are_clear_errors(keras_enhancer, runner, bad):
    image = np.full((9, 9, 3), 0.5, np.float32)
    image[4, 4, 1] = bad
    for call in (keras_enhancer, runner):
        with pytest.raises(ValueError, match="NaN or infinite"):
            call(image)
        with pytest.raises(ValueError, match="unsupported sample type"):
            call(np.zeros((4, 4), np.int32))
        with pytest.raises(ValueError, match="empty image"):
            call(np.zeros((0, 4), np.uint8))


@settings(max_examples=40, **FUZZ)
@given(h=st.integers(1, 40), w=st.integers(1, 40), codec=st.sampled_from(["jpeg", "hevc"]),
       content=st.sampled_from(["random", "constant", "huge", "binary"]),
       value=st.floats(-1e30, 1e30, allow_nan=False), seed=st.integers(0, 99))
def test_quality_score_is_never_nan(h, w, codec, content, value, seed):
    rng = np.random.default_rng(seed)
    y = {"random": rng.random((h, w)), "constant": np.full((h, w), value),
         "huge": rng.choice([-np.inf, np.inf, value], (h, w)),
         "binary": rng.integers(0, 2, (h, w)).astype(float)}[content]
    q = float(iqa.quality_score(y[None, :, :, None].astype(np.float32), codec)[0])
    assert 0.0 <= q <= 1.0


@settings(max_examples=60, **FUZZ)
@given(data=st.binary(min_size=0, max_size=600), prefix=st.sampled_from(
    [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"P5\n3 3\n255\n"]))
def test_random_bytes_read_as_an_image_or_one_line_error(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("bytes") / "x.png"
    path.write_bytes(prefix + data)
    assert_image_or_one_line_error(path)


def _fuzz_folder(folder):
    """Good images of awkward shapes and depths, plus broken files; → (good, bad) names."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    good = {"one.png": np.full((1, 1), 7, np.uint8),
            "odd16.png": (rng.random((3, 77, 3)) * 65535).astype(np.uint16),
            "tiled.png": _blocky((70, 97, 4), seed=4), "const.png": np.full((40, 9), 255, np.uint8)}
    for name, image in good.items():
        write_image(folder / name, image)
    bad = {"random.png": rng.bytes(300), "empty.jpg": b"",
           "truncated.png": (folder / "tiled.png").read_bytes()[:200],
           "jpeg_head.jpg": b"\xff\xd8\xff\xe0" + rng.bytes(100)}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return good, sorted(bad)


def _check_cli(out, good, bad, code, stdout, stderr):
    assert code == 1 and "Traceback" not in stdout + stderr
    errors = stderr.strip().splitlines()
    assert len(errors) == len(bad)
    for name in bad:
        assert sum(f"{name}: error: " in line for line in errors) == 1, (name, errors)
    for name, image in good.items():
        written = read_image(out / name)
        assert written.shape == image.shape and written.dtype == image.dtype
    assert sorted(os.listdir(out)) == sorted(good)  # no temp files left


@pytest.mark.slow
def test_enhance_cli_on_fuzzed_files(tmp_path, weights):
    good, bad = _fuzz_folder(tmp_path / "in")
    proc = subprocess.run([sys.executable, "-m", "rbqe_tf.enhance", str(tmp_path / "in"),
                           "--out", str(tmp_path / "out"), "--weights", weights, "--tile", "64",
                           "--overlap", "16"], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    _check_cli(tmp_path / "out", good, bad, proc.returncode, proc.stdout, proc.stderr)
    usage = subprocess.run([sys.executable, "-m", "rbqe_tf.enhance", str(tmp_path / "in"),
                            "--out", str(tmp_path / "o2"), "--weights", weights, "--tile", "40"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert usage.returncode == 2 and usage.stderr.strip().splitlines() == [
        "error: tile must be a positive multiple of 32, got 40"]


def test_runner_cli_on_fuzzed_files(tmp_path, capsys, export_tiny):
    good, bad = _fuzz_folder(tmp_path / "in")
    code = export_run.main([str(tmp_path / "in"), "--models", export_tiny("fp32"),
                            "--out", str(tmp_path / "out"), "--threads", "1"])
    captured = capsys.readouterr()
    _check_cli(tmp_path / "out", good, bad, code, captured.out, captured.err)


@pytest.mark.slow
def test_two_processes_writing_into_one_folder(tmp_path, weights, tiny_model):
    """Both enhance 6 images (2 with the same name) into one folder at the same time:
    every output is whole and is one process's result; a name is written once."""
    inputs = {}
    for side in "ab":
        folder = tmp_path / side
        folder.mkdir()
        for n, name in enumerate(["shared0", "shared1", f"{side}2", f"{side}3", f"{side}4",
                                  f"{side}5"]):
            image = _blocky((96, 80, 3), seed=10 * (side == "b") + n)
            write_image(folder / f"{name}.png", image)
            inputs.setdefault(name, []).append(image)
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "rbqe_tf.enhance", str(tmp_path / side),
                               "--out", str(out), "--weights", weights, "--exit", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
             for side in "ab"]
    results = [p.communicate(timeout=300) for p in procs]
    errors = [line for _, err in results for line in err.strip().splitlines()]
    assert "Traceback" not in "".join(o + e for o, e in results)
    assert len(errors) == 2 and all("exists (use --overwrite" in e for e in errors), errors
    assert sorted(os.listdir(out)) == sorted(f"{name}.png" for name in inputs)
    enhancer = Enhancer(tiny_model)
    for name, candidates in inputs.items():
        written = read_image(out / f"{name}.png")
        expected = [enhancer(image, exit=2).image for image in candidates]
        assert any(np.abs(written.astype(int) - e).max() <= 1 for e in expected), name
