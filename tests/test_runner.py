"""The TensorFlow-free staged runner: parity with the Keras Enhancer, tiling and score
pooling, per-tile decisions, integrity checks and the command line."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from export import run
from rbqe_tf import iqa, tiling
from rbqe_tf.enhancer import Enhancer
from rbqe_tf.image_io import read_image, write_image
from rbqe_tf.litert.manifest import ManifestError
from rbqe_tf.litert.runner import Runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _image(shape, seed=0, dtype=np.uint8):
    """A smooth random image with 8×8 JPEG-like blocks, so scores differ between exits."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.random((shape[0] // 8 + 1, shape[1] // 8 + 1, *shape[2:])),
                   np.ones((8, 8) + (1,) * (len(shape) - 2)))[:shape[0], :shape[1]]
    noisy = np.clip(base + rng.normal(0, 0.03, shape), 0, 1)
    return np.round(noisy * np.iinfo(dtype).max).astype(dtype)


def _thresholds(scores):
    """0 (exit 1), above every score (exit 5) and one between two exits' scores."""
    best = max(range(1, 4), key=lambda j: scores[j] - max(scores[:j]))
    return [0.0, 1.01] + ([(scores[best] + max(scores[:best])) / 2]
                          if scores[best] > max(scores[:best]) + 1e-3 else [])


@pytest.mark.parametrize("mode,max_diff,mean_diff", [("fp32", 1, 0.01),
                                                      ("int8_full_int8_io", 8, 1.0)])
def test_runner_matches_keras_enhancer_on_an_odd_colour_image(mode, max_diff, mean_diff,
                                                              export_tiny, tiny_model):
    image = _image((61, 53, 3), seed=3)  # pads to one 64×64 tile, like the Enhancer
    runner = Runner(export_tiny(mode), "jpeg", threshold=1.01)
    enhancer = Enhancer(tiny_model, "jpeg", threshold=1.01)
    keras_scores = enhancer(image).scores
    assert len(set(np.round(keras_scores, 3))) > 1, keras_scores
    np.testing.assert_allclose(runner(image).scores[0], keras_scores,
                               atol=1e-5 if mode == "fp32" else 0.02)
    for threshold in _thresholds(keras_scores):
        runner.threshold = enhancer.threshold = threshold
        expected, got = enhancer(image), runner(image)
        assert got.exits == [expected.exit] and got.image.shape == image.shape
        diff = np.abs(got.image.astype(int) - expected.image.astype(int))
        assert diff.max() <= max_diff and diff.mean() < mean_diff, (threshold, diff.max(),
                                                                    diff.mean())


def test_forced_exits_match_keras(export_tiny, tiny_model):
    image = _image((64, 40), seed=4)
    runner = Runner(export_tiny("fp32"), "hevc")
    enhancer = Enhancer(tiny_model, "hevc")
    for k in (1, 3, 5):
        result = runner(image, exit=k)
        assert result.exits == [k] and result.scores == [[]]
        assert np.abs(result.image.astype(int) - enhancer(image, exit=k).image).max() <= 1


@pytest.mark.parametrize("shape,dtype", [((37, 53), np.uint16), ((33, 31, 4), np.uint8),
                                         ((1, 1), np.uint8), ((70, 130, 3), np.uint8)])
def test_any_size_mode_and_depth_round_trip(shape, dtype, export_tiny):
    image = _image(shape, seed=5, dtype=dtype) if min(shape[:2]) > 1 else np.zeros(shape, dtype)
    result = Runner(export_tiny("int8_full_fp32_io"))(image)
    assert result.image.shape == image.shape and result.image.dtype == image.dtype
    if image.ndim == 3 and image.shape[2] == 4:
        np.testing.assert_array_equal(result.image[..., 3], image[..., 3])


def test_tiles_partition_the_image_and_its_score_patches():
    for size in (1, 7, 61, 64, 65, 150, 301):
        axis = tiling.layout(size, 64, 8)
        assert axis.padded >= size and axis.owned[0][0] == 0 and axis.owned[-1][1] == axis.padded
        assert all(a[1] == b[0] for a, b in zip(axis.owned, axis.owned[1:]))
        for block in (4, 8):
            ranges = [tiling.owned_patches(axis, i, block) for i in range(len(axis.origins))]
            assert all(0 <= lo <= hi <= 64 // block - 1 for lo, hi in ranges)
            owned = sorted(p + axis.origins[i] // block for i, (lo, hi) in enumerate(ranges)
                           for p in range(lo, hi))
            assert owned == list(range(max(size // block - 1, 0)))


@pytest.mark.parametrize("codec", ["jpeg", "hevc"])
def test_pooled_tile_scores_match_the_stitched_image_score(codec, export_tiny):
    y = _image((150, 130), seed=6).astype(np.float64) / 255  # 3×3 tiles of 64
    runner = Runner(export_tiny("fp32"), codec, threshold=1.01)
    _, exits, scores = runner.enhance_y(y)
    assert exits == [5] and len(scores[0]) == 4
    for k, pooled in enumerate(scores[0], 1):
        stitched, _, _ = runner.enhance_y(y, exit=k)
        whole = float(iqa.quality_score(stitched[None, :, :, None], codec)[0])
        assert pooled == pytest.approx(whole, abs=0.01)


def test_per_tile_decisions(export_tiny):
    y = _image((150, 130), seed=7).astype(np.float64) / 255
    folder = export_tiny("fp32")
    assert Runner(folder, threshold=0.0, decision="tile").enhance_y(y)[1] == [1] * 9
    _, exits, scores = Runner(folder, threshold=1.01, decision="tile").enhance_y(y)
    assert exits == [5] * 9 and all(len(s) == 4 for s in scores)
    forced, _, _ = Runner(folder, decision="tile").enhance_y(y, exit=2)
    np.testing.assert_array_equal(forced, Runner(folder).enhance_y(y, exit=2)[0])


def test_runner_imports_no_tensorflow():
    code = ("import sys, export.run, rbqe_tf.litert.runner, export.benchmark\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'tf_keras', 'datasets') or m.startswith('rbqe_tf.') "
            "and m.split('.')[1] not in ('litert', 'harness', 'batch', 'cli', 'color', "
            "'config', 'files', 'gain', 'image_io', 'score_pooling', 'tiling'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_cli_without_opencv_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from export.run import main\n"
            f"sys.exit(main(['a.png', '--models', {str(tmp_path)!r}, '--out', {str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: reading and writing image files needs OpenCV: "
                                   "pip install opencv-python-headless")


@pytest.fixture
def tampered(tmp_path, export_tiny):
    folder = tmp_path / "models"
    shutil.copytree(export_tiny("fp32"), folder)
    data = bytearray((folder / "stage_3.tflite").read_bytes())
    data[len(data) // 2] ^= 1
    (folder / "stage_3.tflite").write_bytes(bytes(data))
    return folder


def test_sha256_mismatch_is_refused(tampered, tmp_path, capsys):
    with pytest.raises(ManifestError, match="stage_3.tflite: sha256 .* does not match"):
        Runner(tampered)
    image = tmp_path / "a.png"
    write_image(image, _image((40, 40)))
    assert run.main([str(image), "--models", str(tampered), "--out", str(tmp_path / "o")]) == 2
    assert "does not match the manifest" in capsys.readouterr().err


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("tile"), "tile: missing"),
    (lambda m: m["files"]["stage_2"].pop("sha256"), "files.stage_2.sha256: missing"),
    (lambda m: m["files"].pop("stage_2"), "manifest lists no model 'stage_2'"),
])
def test_incomplete_manifest_is_one_line_error(tmp_path, capsys, edit, message, export_tiny):
    folder = tmp_path / "models"
    shutil.copytree(export_tiny("fp32"), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    image = tmp_path / "a.png"
    write_image(image, _image((40, 40)))
    assert run.main([str(image), "--models", str(folder), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_listed_model_file_missing_is_refused(tmp_path, export_tiny):
    folder = tmp_path / "models"
    shutil.copytree(export_tiny("fp32"), folder)
    (folder / "stage_4.tflite").unlink()
    with pytest.raises(ManifestError, match=r"stage_4.tflite: missing \(listed in manifest.json\)"):
        Runner(folder)


def test_cli_reports_bad_inputs_and_keeps_going(tmp_path, capsys, export_tiny):
    images = tmp_path / "in"
    images.mkdir()
    write_image(images / "good.png", _image((45, 70, 3)))
    (images / "corrupt.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    args = [str(images), str(tmp_path / "missing.png"), "--models", export_tiny("fp32"),
            "--out", str(out), "--threads", "1", "--noxnnpack"]
    assert run.main(args) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and "corrupt.png: error: not a readable image" in errors[0]
    assert "missing.png: error: no such file" in errors[1]
    assert "good.png: exit" in captured.out and "1 enhanced, 2 failed" in captured.out
    assert read_image(out / "good.png").shape == (45, 70, 3)
    assert run.main(args[:1] + args[2:]) == 1  # the output exists now
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert run.main(args[:1] + args[2:] + ["--overwrite", "--decision", "tile"]) == 1
    assert run.main([str(images / "good.png"), "--models", export_tiny("fp32"),
                     "--out", str(images)]) == 1
    assert "would overwrite an input" in capsys.readouterr().err


# LiteRT's Delegate.__del__ raises (harmlessly) after a failed load_delegate.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cli_usage_errors(tmp_path, capsys, export_tiny):
    folder = export_tiny("fp32")
    image = tmp_path / "a.png"
    write_image(image, _image((16, 16)))
    assert run.main([str(image), "--models", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "manifest.json: no such file" in capsys.readouterr().err
    assert run.main([str(image), "--models", folder, "--out", str(tmp_path), "--exit", "6"]) == 2
    assert run.main([str(image), "--models", folder, "--out", str(tmp_path),
                     "--delegate", str(tmp_path / "nope.so")]) == 2
    assert "nope.so: no such file" in capsys.readouterr().err
    (tmp_path / "junk.so").write_bytes(b"not a library")
    assert run.main([str(image), "--models", folder, "--out", str(tmp_path),
                     "--delegate", str(tmp_path / "junk.so")]) == 2
    assert "junk.so" in capsys.readouterr().err
    assert run.main([str(image), "--models", folder, "--out", str(tmp_path),
                     "--overlap", "12"]) == 2
    assert "overlap must be a multiple of 8" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["fp32", "int8_full_int8_io"])
def test_gain_decision_in_the_runner(tmp_path, mode, export_tiny, with_gain):
    image = _image((61, 53, 3), seed=5)
    rule = {"margin": 0.1, "tolerance": 0.05}
    leave = Runner(with_gain(export_tiny(mode), tmp_path / "a", [-1.0] * 5, rule))
    assert leave.decision == "gain"
    kept = leave(image)
    assert kept.exit == 0 and kept.gains == [-1.0] * 5
    np.testing.assert_array_equal(kept.image, image)
    pick = Runner(with_gain(export_tiny(mode), tmp_path / "b",
                            [0.2, 0.5, 0.52, 0.3, 0.1], rule))
    chosen = pick(image)
    assert chosen.exit == 2  # 0.5 is within 0.05 dB of the best (0.52)
    np.testing.assert_array_equal(chosen.image, pick(image, exit=2).image)
    os.remove(os.path.join(tmp_path / "b", "gain_jpeg.npz"))
    with pytest.raises(ManifestError, match=r"gain_jpeg.npz: missing \(listed in manifest.json\)"):
        Runner(str(tmp_path / "b"))
    assert Runner(export_tiny(mode)).decision == "image"  # no predictor: the score


@pytest.mark.parametrize("mode,max_diff", [("fp32", 1), ("int8_full_int8_io", 2)])
def test_known_exits_run_the_monolithic_file_as_the_stages_would(mode, max_diff, export_tiny):
    image = _image((150, 130, 3), seed=8)  # 3×3 tiles of 64
    monolithic = Runner(export_tiny(mode))
    staged = Runner(export_tiny(mode))
    staged.monolithic = False
    for k in (1, 3, 5):
        a, b = monolithic(image, exit=k), staged(image, exit=k)
        assert a.exits == b.exits == [k]
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= max_diff
    # a forced (or gain-decided) exit never opens a stage file
    assert not any(name.startswith("stage_") for name in monolithic._models)


def test_stage_hand_over_without_copies_matches_copies(export_tiny):
    from rbqe_tf.litert.interpreter import Value
    from rbqe_tf.litert.stages import iterate_stages
    stages = Runner(export_tiny("int8_full_int8_io")).stages
    rng = np.random.default_rng(9)
    tiles = [rng.random((1, 64, 64, 1), np.float32) for _ in range(2)]

    def copied(y):
        values, exits = {"y": Value(y)}, []
        for stage in stages:
            values.update(stage.run({name: values[name] for name in stage.inputs}))
            exits.append(values["exit"].data)
        return exits

    expected = [copied(y) for y in tiles]
    # Two tiles exit by exit: each stage file runs for the second tile while the first
    # still holds views of its outputs, which must be copied out first.
    runs = [iterate_stages(stages, y) for y in tiles]
    for k in range(len(stages)):
        for tile_run, want in zip(runs, expected):
            np.testing.assert_array_equal(next(tile_run).data, want[k])
    del runs
    for y, want in zip(tiles, expected):  # one tile alone, then the models run again
        for got, exit_k in zip(iterate_stages(stages, y), want):
            np.testing.assert_array_equal(got.data, exit_k)


def test_exit_files_beyond_models_mb_are_closed_and_reopened(export_tiny, capsys, tmp_path):
    folder = export_tiny("int8_full_int8_io")
    image = _image((70, 90, 3), seed=3)  # 2×2 tiles of 64
    keep_all = Runner(folder)
    expected = {k: keep_all(image, exit=k).image for k in (1, 2, 5)}
    assert sorted(keep_all._models) == ["exit_1", "exit_2", "exit_5"]
    one = Runner(folder, models_mb=0)  # room for no second exit file
    for k in (1, 2, 5, 1):
        np.testing.assert_array_equal(one(image, exit=k).image, expected[k])
        assert list(one._models) == [f"exit_{k}"]
    if one.footprints:  # /proc readable: sizes measured, so a budget keeps several
        roomy = Runner(folder, models_mb=sum(one.footprints.values()) / 2 ** 20 * 4 + 64)
        for k in (1, 2, 5, 2):
            np.testing.assert_array_equal(roomy(image, exit=k).image, expected[k])
        assert sorted(roomy._models) == ["exit_1", "exit_2", "exit_5"]
    with pytest.raises(ValueError, match="models_mb"):
        Runner(folder, models_mb=-1)
    write_image(tmp_path / "a.png", image)
    assert run.main([str(tmp_path / "a.png"), "--models", folder, "--out", str(tmp_path / "o"),
                     "--models_mb", "-1"]) == 2
    assert "--models_mb" in capsys.readouterr().err


@pytest.mark.parametrize("shape,dtype", [((61, 75, 3), np.uint8), ((40, 70, 4), np.uint16),
                                         ((33, 50, 3), np.float32)])
def test_colour_put_back_in_strips_is_the_whole_image_computation(shape, dtype, export_tiny,
                                                                     monkeypatch):
    from rbqe_tf import color
    image = _image(shape, seed=4, dtype=np.uint16 if dtype == np.uint16 else np.uint8)
    image = (image / np.float32(255)).astype(dtype) if dtype == np.float32 else image
    model = Runner(export_tiny("int8_full_int8_io"))
    whole = {k: model(image, exit=k).image for k in (2, None)}
    monkeypatch.setattr(color, "STRIP_PIXELS", 7 * shape[1] // 4)  # 1-row strips
    for k, expected in whole.items():
        got = model(image, exit=k).image
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
