"""tools.fit_train (backend-neutral trainer) and tools.pack_train_data (its data pack)."""
import json
import shutil

import cv2
import numpy as np
import pytest

from rbqe_tf.levels import LIGHT_EXIT_WEIGHTS, exit_weights, severity
from tools import fit_train, pack_train_data


def _gt_source(tmp_path):
    """Two lossless images: one colour 120×100, one gray 96×160."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8), (7, 7), 2)
    cv2.imwrite(str(src / "a" / "colour.png"), smooth)
    cv2.imwrite(str(src / "gray.png"), rng.integers(0, 256, (96, 160), dtype=np.uint8))
    return src


def test_exit_loss_equals_the_project_loss():
    import tensorflow as tf
    from rbqe_tf.loss import weighted_loss
    rng = np.random.default_rng(1)
    target = rng.random((3, 8, 8, 1), np.float32)
    exits = [target + 0.1 * rng.standard_normal(target.shape).astype(np.float32) for _ in range(5)]
    sev = np.array([0.0, 2.5, 4.0], np.float32)
    packed = np.concatenate([target, np.broadcast_to(
        exit_weights(sev)[:, None, None, :], (3, 8, 8, 5))], -1).astype(np.float32)
    ours = fit_train.exit_loss(tf.constant(packed), tf.constant(np.concatenate(exits, -1)))
    reference, _ = weighted_loss(exits, target, sev)
    np.testing.assert_allclose(np.asarray(ours), reference.numpy(), rtol=1e-5)


def test_jpeg_patches_are_opencv_jpeg_at_their_severity(tmp_path):
    planes = pack_train_data.pack_gt(_gt_source(tmp_path), tmp_path / "pack")
    sampler = fit_train.PatchSampler(list(planes.values()), [], "jpeg", 64, 4)
    rng = np.random.default_rng(3)
    for _ in range(6):
        comp, gt, weights = sampler._jpeg(rng)
        matches = [qf for qf in range(10, 51) if np.array_equal(comp, cv2.imdecode(
            cv2.imencode(".jpg", gt, [cv2.IMWRITE_JPEG_QUALITY, qf])[1], cv2.IMREAD_UNCHANGED))]
        assert matches, "not an OpenCV JPEG at QF 10..50"
        np.testing.assert_allclose(weights, exit_weights(severity("jpeg", matches[0])))
        assert any(_find(gt, plane) for plane in planes.values())
    x, y = sampler(0)
    assert x.shape == (4, 64, 64, 1) and y.shape == (4, 64, 64, 6)
    assert 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(y[:, 5, 7, 1:], y[:, 0, 0, 1:])  # weights fill the patch


def test_light_patches_leave_the_input_alone(tmp_path):
    """--light: uncompressed (input = target), QF 51..100 and re-saved patches, weighted
    LIGHT_EXIT_WEIGHTS unless the first pass was heavy; no draw at all when off."""
    planes = list(pack_train_data.pack_gt(_gt_source(tmp_path), tmp_path / "pack").values())
    sampler = fit_train.PatchSampler(planes, [], "jpeg", 64, 4, light=1.0)
    rng = np.random.default_rng(5)
    kinds = set()
    for _ in range(40):
        comp, gt, weights = sampler._jpeg(rng)
        if np.array_equal(comp, gt):
            kinds.add("uncompressed")
        elif any(np.array_equal(comp, cv2.imdecode(cv2.imencode(
                ".jpg", gt, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED))
                for q in range(51, 101)):
            kinds.add("single")
        else:
            kinds.add("resaved")
        light = np.allclose(weights, LIGHT_EXIT_WEIGHTS)
        heavy_first = any(np.allclose(weights, exit_weights(severity("jpeg", q)))
                          for q in range(10, 51))
        assert light or (heavy_first and "resaved" in kinds), weights
    assert kinds == {"uncompressed", "single", "resaved"}
    off = fit_train.PatchSampler(planes, [], "jpeg", 64, 4)
    on = fit_train.PatchSampler(planes, [], "jpeg", 64, 4, light=1e-9)
    assert not np.array_equal(off(0)[0], on(0)[0])  # a draw when on, even if never light
    np.testing.assert_array_equal(off(0)[0], fit_train.PatchSampler(planes, [], "jpeg", 64, 4,
                                                                    light=0.0)(0)[0])


def test_low_qf_share_and_relative_weights(tmp_path):
    planes = list(pack_train_data.pack_gt(_gt_source(tmp_path), tmp_path / "pack").values())
    low = fit_train.PatchSampler(planes, [], "jpeg", 64, 4, low_qf=1.0)
    rng = np.random.default_rng(4)
    # QF <= 20 <=> severity >= 3 <=> exit 2's weight has reached the table's 0.5
    assert all(low._jpeg(rng)[2][1] == 0.5 for _ in range(20))
    plain = fit_train.PatchSampler(planes, [], "jpeg", 64, 4)
    relative = fit_train.PatchSampler(planes, [], "jpeg", 64, 4, relative_eps=1e-5)
    (x, y), (xr, yr) = plain(7), relative(7)
    np.testing.assert_array_equal(x, xr)
    mse_in = np.mean(np.square(x - y[..., :1]), axis=(1, 2, 3))
    np.testing.assert_allclose(yr[:, 0, 0, 1:], y[:, 0, 0, 1:] / (mse_in[:, None] + 1e-5),
                               rtol=1e-5)


def _find(patch, plane):
    """Offsets where ``patch`` sits in ``plane``."""
    windows = np.lib.stride_tricks.sliding_window_view(plane, patch.shape)
    return [tuple(p) for p in np.argwhere((windows == patch).all(axis=(2, 3)))]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg with libx265")
def test_pack_and_hevc_patches_are_grid_aligned_crops(tmp_path):
    from rbqe_tf.compression import compress_hevc
    from rbqe_tf.image_io import read_image
    from rbqe_tf.sources import to_y
    src, out = _gt_source(tmp_path), tmp_path / "pack"
    planes = pack_train_data.pack_gt(src, out)
    assert list(planes) == ["a_colour.png", "gray.png"]
    np.testing.assert_array_equal(cv2.imread(str(out / "gt" / "a_colour.png"), 0),
                                  to_y(read_image(src / "a" / "colour.png")))
    pack_train_data.pack_hevc(planes, out, count=2, size=48, seed=0, workers=2)
    index = json.loads((out / "hevc" / "index.json").read_text())
    assert index["qps"] == [22, 27, 32, 37, 42] and len(index["crops"]) == 2
    first = index["crops"][0]
    assert first["y0"] % 4 == 0 and first["x0"] % 4 == 0
    crop = planes[first["gt"]][first["y0"]:first["y0"] + 48, first["x0"]:first["x0"] + 48]
    np.testing.assert_array_equal(cv2.imread(str(out / "hevc" / "0000_qp32.png"), 0),
                                  compress_hevc(np.ascontiguousarray(crop), 32)[0])

    gt = fit_train.load_gt(out / "gt")
    crops = fit_train.load_hevc(out / "hevc", gt)
    sampler = fit_train.PatchSampler(list(gt.values()), crops, "hevc", 32, 2)
    rng = np.random.default_rng(5)
    for _ in range(8):
        comp, target, weights = sampler._hevc(rng)
        qp = next(q for q in (22, 27, 32, 37, 42)
                  if np.allclose(weights, exit_weights(severity("hevc", q))))
        for (crop_gt, decoded) in crops:
            offsets = _find(np.ascontiguousarray(target), crop_gt)
            if offsets and (decoded[qp][offsets[0][0]:, offsets[0][1]:][:32, :32] == comp).all():
                assert offsets[0][0] % 4 == 0 and offsets[0][1] % 4 == 0
                break
        else:
            pytest.fail("HEVC patch is not a crop of a packed pair")


def test_bad_inputs_give_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    common = ["--out", str(tmp_path / "out"), "--name", "t", "--steps", "1"]
    with pytest.raises(SystemExit, match=r"^error: .*empty: no PNG images$"):
        fit_train.main(["--gt", str(tmp_path / "empty")] + common)
    pack_train_data.pack_gt(_gt_source(tmp_path), tmp_path / "pack")
    with pytest.raises(SystemExit, match=r"^error: no ground-truth image is at least 256x256$"):
        fit_train.main(["--gt", str(tmp_path / "pack" / "gt"), "--patch", "256"] + common)
    with pytest.raises(SystemExit, match=r"^error: --train_from_stage 0 is outside 1\.\.5 "):
        fit_train.main(["--gt", str(tmp_path / "pack" / "gt"), "--variant", "tiny", "--patch", "32",
                        "--train_from_stage", "0"] + common)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fit_run_trains_and_writes_a_loadable_model(tmp_path):
    from rbqe_tf.model import build_model, load_model, weights_digest
    init = tmp_path / "init.keras"
    build_model("tiny").save(init)
    pack_train_data.pack_gt(_gt_source(tmp_path), tmp_path / "pack")
    fit_train.main(["--gt", str(tmp_path / "pack" / "gt"), "--init", str(init),
                    "--out", str(tmp_path / "out"), "--name", "t", "--patch", "32",
                    "--batch", "2", "--steps", "4", "--steps_per_epoch", "2", "--warmup", "1"])
    log = json.loads((tmp_path / "out" / "t.log.json").read_text())
    assert log["steps"] == 4 and [h["step"] for h in log["history"]] == [2, 4]
    assert log["history"][-1]["lr"] == pytest.approx(5e-4 * fit_train.FINAL_LR_RATIO)
    trained = load_model(tmp_path / "out" / "t.keras")
    assert weights_digest(trained) != weights_digest(load_model(init))


@pytest.mark.slow
def test_mixed_bfloat16_copy_is_close_and_saves_float32(tmp_path):
    import keras
    from rbqe_tf.model import build_model, load_model, weights_digest
    model = build_model("tiny")
    copy = fit_train.mixed_precision_copy(model)
    assert {layer.dtype_policy.name for layer in copy.layers if layer.name.startswith("exit_")
            and layer.name[5:].isdigit()} == {"float32"}
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in copy.layers}
    assert all(w.dtype == "float32" for w in copy.weights)
    x = np.random.default_rng(0).random((1, 32, 32, 1), np.float32)
    for ours, ref in zip(copy(x), model(x)):
        ours, ref = keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(ref)
        assert ours.dtype == np.float32
        assert 0 < np.abs(ours - ref).max() < 0.02  # bfloat16 compute, not float32
    init = tmp_path / "init.keras"
    model.save(init)
    pack_train_data.pack_gt(_gt_source(tmp_path), tmp_path / "pack")
    fit_train.main(["--gt", str(tmp_path / "pack" / "gt"), "--init", str(init), "--mixed_bfloat16",
                    "--out", str(tmp_path / "out"), "--name", "t", "--patch", "32",
                    "--batch", "2", "--steps", "2", "--steps_per_epoch", "2", "--warmup", "1"])
    trained = load_model(tmp_path / "out" / "t.keras")
    assert {layer.dtype_policy.name for layer in trained.layers} == {"float32"}
    assert weights_digest(trained) != weights_digest(load_model(init))


@pytest.mark.slow
def test_train_from_stage_changes_only_the_later_exits(tmp_path):
    from rbqe_tf.model import build_model, load_model
    init = tmp_path / "init.keras"
    model = build_model("tiny")
    model.save(init)
    pack_train_data.pack_gt(_gt_source(tmp_path), tmp_path / "pack")
    fit_train.main(["--gt", str(tmp_path / "pack" / "gt"), "--init", str(init),
                    "--train_from_stage", "4", "--lr", "1e-2",
                    "--out", str(tmp_path / "out"), "--name", "t", "--patch", "32",
                    "--batch", "2", "--steps", "2", "--steps_per_epoch", "2", "--warmup", "1"])
    trained = load_model(tmp_path / "out" / "t.keras")
    x = np.random.default_rng(1).random((1, 32, 32, 1), np.float32)
    before, after = model.predict(x, verbose=0), trained.predict(x, verbose=0)
    for k in range(3):
        np.testing.assert_array_equal(after[k], before[k])
    for k in (3, 4):
        assert np.abs(after[k] - before[k]).max() > 1e-4
