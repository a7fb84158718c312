"""The two training drivers on the one training definition: the same step from the same
start, the Keras driver's run (resume, light patches, bfloat16, frozen stages), and the
data pack a GPU lease trains on."""
import dataclasses
import json
import shutil

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from rbqe_tf import data
from rbqe_tf.keras_driver import KerasDriver, mixed_precision_copy, train as keras_train
from rbqe_tf.model import build_model, load_model, weights_digest
from rbqe_tf.train_config import TrainConfig
from rbqe_tf.train_step import make_strategy
from rbqe_tf.tf_driver import TFDriver
from rbqe_tf.training import load_data
from tools import pack_train_data


def _gt_source(tmp_path):
    """Two lossless images: one colour 120×100, one gray 96×160."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8), (7, 7), 2)
    cv2.imwrite(str(src / "a" / "colour.png"), smooth)
    cv2.imwrite(str(src / "gray.png"), rng.integers(0, 256, (96, 160), dtype=np.uint8))
    return src


def _config(tmp_path, **changes):
    base = TrainConfig(data=[str(_gt_source(tmp_path))], run_dir=str(tmp_path / "run"),
                       variant="tiny", patch=32, batch=2, steps=4, warmup=1, ckpt_every=2,
                       log_every=2, val_every=0, lr=1e-3, workers=1)
    return dataclasses.replace(base, **changes)


def test_both_drivers_take_the_same_step(tmp_path):
    """Same start, same batch, same rate: the TensorFlow step (fused Adam, tf.distribute)
    and the Keras driver's train_on_batch move every weight alike."""
    cfg = _config(tmp_path, relative_eps=1e-3)
    sampler = load_data(cfg)[0]
    batch = sampler(0)
    tf_driver = TFDriver(cfg, make_strategy("default"), sampler, tmp_path, chief=False)
    keras_driver = KerasDriver(cfg, sampler)
    start = [w.numpy() for w in tf_driver.model.weights]
    for a, b in zip(start, keras_driver.model.weights):  # the same seeded start
        np.testing.assert_array_equal(a, b.numpy())
    for _ in range(2):
        tf_loss = tf_driver.step(tuple(tf.constant(a) for a in batch), 1e-3)[0]
        keras_loss = keras_driver.step((batch[0], batch[1:]), 1e-3)[0]
    assert tf_loss == pytest.approx(keras_loss, rel=1e-4)
    moved = max(float(np.abs(a - w.numpy()).max()) for a, w in zip(start, tf_driver.model.weights))
    diff = max(float(np.abs(a.numpy() - b.numpy()).max())
               for a, b in zip(tf_driver.model.weights, keras_driver.model.weights))
    assert moved > 1e-4 and diff < 1e-6, (moved, diff)


@pytest.mark.slow
def test_keras_driver_trains_resumes_and_writes_a_loadable_model(tmp_path):
    init = tmp_path / "init.keras"
    build_model("tiny").save(init)
    cfg = _config(tmp_path, driver="keras", init=str(init), light=0.5, clip_norm=1.0)
    assert keras_train(cfg, ["test"]) == 0
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["backend"] == keras.backend.backend() and config["config"]["driver"] == "keras"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-2.npz",
                                                                       "ckpt-4.npz"]
    trained = load_model(run / "final.keras")
    assert weights_digest(trained) != weights_digest(load_model(init))
    # Resuming to a longer run continues from step 4 and keeps the earlier launch's record.
    assert keras_train(dataclasses.replace(cfg, steps=6, resume=True), ["test"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["start_step"] == 4 and len(config["previous"]) == 1
    assert (run / "checkpoints" / "ckpt-6.npz").is_file()


@pytest.mark.slow
def test_mixed_bfloat16_copy_is_close_and_saves_float32(tmp_path):
    model = build_model("tiny")
    copy = mixed_precision_copy(model)
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
    cfg = _config(tmp_path, driver="keras", init=str(init), mixed_bfloat16=True, steps=2)
    assert keras_train(cfg) == 0
    trained = load_model(tmp_path / "run" / "final.keras")
    assert {layer.dtype_policy.name for layer in trained.layers} == {"float32"}
    assert weights_digest(trained) != weights_digest(load_model(init))


@pytest.mark.slow
def test_train_from_stage_changes_only_the_later_exits(tmp_path):
    init = tmp_path / "init.keras"
    model = build_model("tiny")
    model.save(init)
    cfg = _config(tmp_path, driver="keras", init=str(init), train_from_stage=4, lr=1e-2,
                  steps=2)
    assert keras_train(cfg) == 0
    trained = load_model(tmp_path / "run" / "final.keras")
    x = np.random.default_rng(1).random((1, 32, 32, 1), np.float32)
    before, after = model.predict(x, verbose=0), trained.predict(x, verbose=0)
    for k in range(3):
        np.testing.assert_array_equal(after[k], before[k])
    for k in (3, 4):
        assert np.abs(after[k] - before[k]).max() > 1e-4


def _find(patch, plane):
    """Offsets where ``patch`` sits in ``plane``."""
    windows = np.lib.stride_tricks.sliding_window_view(plane, patch.shape)
    return [tuple(p) for p in np.argwhere((windows == patch).all(axis=(2, 3)))]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg with libx265")
def test_pack_is_a_raw_folder_and_a_built_hevc_set(tmp_path):
    from rbqe_tf.compression import compress_hevc
    from rbqe_tf.image_io import read_image
    from rbqe_tf.sources import to_y
    src, out = _gt_source(tmp_path), tmp_path / "pack"
    planes = pack_train_data.pack_gt(src, out)
    assert list(planes) == ["a_colour.png", "gray.png"]
    np.testing.assert_array_equal(cv2.imread(str(out / "gt" / "a_colour.png"), 0),
                                  to_y(read_image(src / "a" / "colour.png")))
    pack_train_data.pack_hevc(planes, out, count=2, size=48, seed=0, workers=2)
    both = data.load_training_set([out / "gt", out / "hevc"], ("jpeg", "hevc"))
    hevc = [r for r in both.records if r.codec == "hevc"]
    assert sorted({r.level for r in hevc}) == [22, 27, 32, 37, 42] and len(hevc) == 10
    assert sum(r.compressed is None for r in both.records) == 2  # JPEG made per patch
    crop = hevc[0].gt
    source, offset = next((n, o) for n, p in planes.items() if (o := _find(crop, p)))
    assert offset[0][0] % 4 == 0 and offset[0][1] % 4 == 0, (source, offset)
    np.testing.assert_array_equal(hevc[0].compressed, compress_hevc(crop, hevc[0].level)[0])
    sampler = data.PatchSampler(both, 32, 8, augment=False)
    codecs = {sampler.patch_at(n, b).codec for n in range(4) for b in range(8)}
    assert codecs == {"jpeg", "hevc"}
