"""Training: loss, NaN guard, distribution equivalence, kill/resume, CLI errors, progress."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from rbqe_tf import data
from rbqe_tf.levels import EXIT_WEIGHTS, exit_weights as np_exit_weights, severity
from rbqe_tf.loss import exit_weights, relative_to_input, weighted_loss
from rbqe_tf.model import build_model, load_model
from rbqe_tf.train_config import ConfigError, parse_weight_table
from rbqe_tf.train_step import TrainStep
from rbqe_tf.train_val import Validator, format_table

REPO = Path(__file__).resolve().parents[1]
P = 32


def _smooth_images(directory, count, shape, seed):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        y = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), 2.5)
        y = (y - y.mean()) * 6 + 128 + 40 * np.sin(np.arange(shape[1]) / 5.0)
        cv2.imwrite(str(directory / f"im{i}.png"), np.clip(y, 0, 255).astype(np.uint8))
    return directory


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return (_smooth_images(root / "train", 4, (96, 128), 0),
            _smooth_images(root / "val", 1, (40, 72), 1))


@pytest.fixture(scope="module")
def tiny_step():
    keras.utils.set_random_seed(0)
    model = build_model("tiny")
    return TrainStep(model, tf.distribute.get_strategy(), 8, EXIT_WEIGHTS, lr=2e-3)


def _batches(arrays):
    return iter(tf.data.Dataset.from_tensors(arrays).repeat())


# --- loss -------------------------------------------------------------------------------

def test_weighted_loss_equals_hand_computation():
    rng = np.random.default_rng(0)
    target = rng.random((2, 4, 4, 1), np.float32)
    exits = [rng.random((2, 4, 4, 1), np.float32) for _ in range(5)]
    sev = np.array([0.0, 3.0], np.float32)
    per_sample, mse = weighted_loss(exits, target, sev)
    for b, row in enumerate((0, 3)):
        hand_mse = [np.mean((e[b] - target[b]) ** 2) for e in exits]
        np.testing.assert_allclose(mse[b], hand_mse, rtol=1e-6)
        np.testing.assert_allclose(per_sample[b], np.dot(EXIT_WEIGHTS[row], hand_mse), rtol=1e-6)


def test_relative_loss_divides_by_the_input_mse():
    rng = np.random.default_rng(3)
    target = rng.random((3, 4, 4, 1), np.float32)
    compressed = target + rng.normal(0, [[[[0.01]]], [[[0.1]]], [[[0.0]]]], target.shape)
    per_sample = np.array([1.0, 2.0, 3.0], np.float32)
    got = relative_to_input(per_sample, compressed, target, 1e-5).numpy()
    mse_in = np.mean((compressed - target) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(got, per_sample / (mse_in + 1e-5), rtol=1e-5)
    assert got[2] == pytest.approx(3.0 / 1e-5)  # a lossless sample: eps bounds the weight


def test_step_with_relative_eps_reports_the_relative_loss():
    keras.utils.set_random_seed(0)
    model = build_model("tiny")
    step = TrainStep(model, tf.distribute.get_strategy(), 4, EXIT_WEIGHTS, lr=1e-3,
                     relative_eps=1e-4)
    rng = np.random.default_rng(4)
    target = rng.random((4, P, P, 1), np.float32)
    compressed = (target + rng.normal(0, 0.05, target.shape)).astype(np.float32)
    sev = np.array([0.0, 1.0, 2.0, 4.0], np.float32)
    per_sample, _ = weighted_loss(model(compressed), target, sev)
    expected = np.mean(relative_to_input(per_sample, compressed, target, 1e-4))
    loss, _, _ = step.step(_batches((compressed, target, sev)))
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)


def test_weights_interpolate_between_table_rows():
    qf35 = severity("jpeg", 35)  # halfway between the QF 40 and QF 30 rows
    w = exit_weights([qf35, 0.25, 4.0]).numpy()
    np.testing.assert_allclose(w[0], (EXIT_WEIGHTS[1] + EXIT_WEIGHTS[2]) / 2)
    np.testing.assert_allclose(w, np_exit_weights([qf35, 0.25, 4.0]), rtol=1e-6)


@pytest.mark.parametrize("sev", [-0.5, 4.01])
def test_severity_outside_the_table_is_rejected(sev):
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the exit-weight table"):
        exit_weights([1.0, sev])


def test_weight_table_spec():
    np.testing.assert_array_equal(parse_weight_table("paper"), EXIT_WEIGHTS)
    np.testing.assert_array_equal(parse_weight_table("1,1,1,1,2"), [[1, 1, 1, 1, 2]] * 5)
    for bad in ("1,2,3", "a,b,c,d,e", "1,1,1,1,-1", "1,1,1,1,1;2,2,2,2,2"):
        with pytest.raises(ConfigError):
            parse_weight_table(bad)


# --- step ---------------------------------------------------------------------------------

def test_nan_batch_is_skipped_counted_and_changes_nothing(tiny_step):
    rng = np.random.default_rng(1)
    target = rng.random((8, P, P, 1), np.float32)
    compressed = target.copy()
    compressed[3, 5, 5, 0] = np.nan
    before = [v.numpy() for v in tiny_step.model.weights + tiny_step.optimizer.variables]
    skipped = int(tiny_step.skipped.numpy())
    loss, _, norm = tiny_step.step(_batches((compressed, target, np.full(8, 2.0, np.float32))))
    assert not np.isfinite(norm.numpy()) and not np.isfinite(loss.numpy())
    assert int(tiny_step.skipped.numpy()) == skipped + 1
    after = [v.numpy() for v in tiny_step.model.weights + tiny_step.optimizer.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_short_run_lowers_the_loss(tiny_step):
    """A learnable synthetic degradation (a brightness offset): 20 steps cut the loss 5x."""
    rng = np.random.default_rng(2)

    def batch():
        target = 0.9 * rng.random((8, P, P, 1), np.float32)
        return target + 0.1, target, rng.uniform(0, 4, 8).astype(np.float32)

    held_out = batch()

    def loss():
        exits = tiny_step.model(held_out[0], training=False)
        return float(tf.reduce_mean(weighted_loss(exits, held_out[1], held_out[2])[0]))

    before = loss()
    it = iter(tf.data.Dataset.from_tensor_slices(tuple(np.stack(a) for a in zip(
        *[batch() for _ in range(20)]))))
    for _ in range(20):
        tiny_step.step(it)
    assert loss() < 0.2 * before


# --- validation -----------------------------------------------------------------------------

def test_validation_pads_crops_and_reports_delta_psnr(images):
    val = data.validation_images([images[1]], "jpeg", levels=[10, 50])
    shapes = []

    def identity(y, training):  # five exits equal to the (padded) input
        tf.py_function(lambda s: shapes.append(tuple(s.numpy())) or 0, [tf.shape(y)], tf.int32)
        return [y] * 5

    rows = Validator(val)(identity)
    assert shapes[0] == (1, 64, 96, 1)  # 40x72 padded to multiples of 32
    assert [r["level"] for r in rows] == [10, 50]
    for r in rows:
        assert r["dpsnr"] == [0.0] * 5 and r["psnr"] == [r["psnr_input"]] * 5
    assert "exit5" in format_table(rows, 7) and "mean" in format_table(rows, 7)


# --- distribution (subprocess: logical devices must be set before TF starts) -------------

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, keras, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from rbqe_tf.levels import EXIT_WEIGHTS
    from rbqe_tf.model import build_model
    from rbqe_tf.train_step import TrainStep, make_strategy
    rng = np.random.default_rng(0)
    target = rng.random((2, 4, 32, 32, 1), np.float32)
    compressed = np.clip(target + 0.05 * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
    sev = rng.uniform(0, 4, (2, 4)).astype(np.float32)
    def seeded_model():  # a 2-exit network keeps tracing short
        keras.utils.set_random_seed(0)
        return build_model("tiny", num_levels=3)
    weights = {"init": [v.numpy() for v in seeded_model().weights]}
    for name in ("default", "mirrored"):
        strategy = make_strategy(name)
        ds = tf.data.Dataset.from_tensor_slices((compressed, target, sev))
        it = iter(strategy.experimental_distribute_dataset(ds))
        with strategy.scope():
            step = TrainStep(seeded_model(), strategy, 4, EXIT_WEIGHTS[:, :2])
        for _ in range(2):
            step.step(it)
        weights[name] = [v.numpy() for v in step.model.weights]
        replicas = strategy.num_replicas_in_sync
    def max_diff(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(weights[a], weights[b]))
    print(json.dumps({"replicas": replicas, "max_diff": max_diff("default", "mirrored"),
                      "moved": max_diff("init", "default")}))
""")


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_mirrored_two_replicas_match_single_device():
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["max_diff"] < 1e-5 and result["moved"] > 1e-4, result


# --- command line ---------------------------------------------------------------------------

def _train_cmd(images, run_dir, *extra):
    return [sys.executable, "-m", "rbqe_tf.train", f"--data={images[0]}", f"--run_dir={run_dir}",
            "--variant=tiny", f"--patch={P}", "--batch=4", *extra]


def _latest_step(run_dir):
    state = Path(run_dir, "checkpoints", "checkpoint")
    if not state.is_file():
        return None
    latest = tf.train.get_checkpoint_state(str(state.parent))
    return int(latest.model_checkpoint_path.rsplit("-", 1)[1]) if latest else None


def _checkpoint_weights(run_dir, step):
    model = build_model("tiny")
    tf.train.Checkpoint(model=model).restore(str(Path(run_dir, "checkpoints", f"ckpt-{step}"))
                                             ).expect_partial()
    return model.get_weights()


@pytest.mark.slow
def test_sigkill_then_resume_continues_from_the_last_checkpoint(images, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(images, run_dir, "--steps=100000", "--ckpt_every=3"),
                            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while (_latest_step(run_dir) or 0) < 6 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = _latest_step(run_dir)
    assert killed_at is not None and killed_at >= 6 and killed_at % 3 == 0

    # Without --resume the run directory is refused, not overwritten.
    refused = subprocess.run(_train_cmd(images, run_dir, "--steps=10"), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    # Resuming to the checkpoint's own step trains nothing: final.keras holds the restored weights.
    done = subprocess.run(_train_cmd(images, run_dir, f"--steps={killed_at}", "--resume"),
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed {run_dir} at step {killed_at}" in done.stdout
    restored = load_model(run_dir / "final.keras").get_weights()
    for a, b in zip(restored, _checkpoint_weights(run_dir, killed_at)):
        np.testing.assert_array_equal(a, b)

    # Resuming further continues the step count; SIGTERM finishes the step and saves.
    proc = subprocess.Popen(_train_cmd(images, run_dir, "--steps=100000", "--ckpt_every=1",
                                       "--resume"),
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert f"at step {killed_at}" in proc.stdout.readline()
        deadline = time.time() + 300
        while _latest_step(run_dir) == killed_at and time.time() < deadline:
            time.sleep(0.2)
        continued_to = _latest_step(run_dir)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=300)[0]
    finally:
        proc.kill()
    # The count continues from the checkpoint (polling every 0.2 s may see one step more
    # when the machine is busy).
    assert killed_at < continued_to <= killed_at + 3
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "stopped by signal" in rest and _latest_step(run_dir) >= continued_to
    config = json.loads((run_dir / "config.json").read_text())
    assert config["start_step"] == killed_at and config["config"]["resume"]
    assert len(config["previous"]) == 2


@pytest.mark.parametrize("args,message", [
    (["--variant=huge"], "unknown variant"),
    (["--data=/no/such/dir"], "no such directory"),
    (["--patch=48"], "multiple of 32"),
    (["--codec=hevc"], "built set"),
    (["--exit_weights=1,2"], "exit_weights"),
    (["--relative_eps=-1e-5"], "--relative_eps must be >= 0"),
    (["--low_qf=1.5"], "--low_qf must be in [0, 1]"),
    (["--steps=abc"], "steps"),
    (["--no_such_flag=1"], "no_such_flag"),
])
def test_bad_config_is_one_line_and_exit_status_2(images, tmp_path, args, message):
    cmd = _train_cmd(images, tmp_path / "run", "--steps=5")
    out = subprocess.run(cmd + args, cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=60)
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "run").exists()
