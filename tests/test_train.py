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
from rbqe_tf.checkpoints import checkpoint_paths
from rbqe_tf.levels import EXIT_WEIGHTS, exit_weights, severity
from rbqe_tf.loss import weighted_loss
from rbqe_tf.model import build_model, load_model
from rbqe_tf.schedule import FINAL_RATIO, learning_rate, progress
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
    return TrainStep(model, tf.distribute.get_strategy(), 8)


def _weights(severities):
    return exit_weights(np.asarray(severities, np.float32)).astype(np.float32)


# --- loss -------------------------------------------------------------------------------

def test_weighted_loss_equals_hand_computation():
    rng = np.random.default_rng(0)
    target = rng.random((2, 4, 4, 1), np.float32)
    exits = [rng.random((2, 4, 4, 1), np.float32) for _ in range(5)]
    per_sample, mse = weighted_loss(exits, target, _weights([0.0, 3.0]))
    for b, row in enumerate((0, 3)):
        hand_mse = [np.mean((e[b] - target[b]) ** 2) for e in exits]
        np.testing.assert_allclose(mse[b], hand_mse, rtol=1e-6)
        np.testing.assert_allclose(per_sample[b], np.dot(EXIT_WEIGHTS[row], hand_mse), rtol=1e-6)


def test_relative_loss_divides_by_the_input_mse():
    rng = np.random.default_rng(3)
    target = rng.random((3, 4, 4, 1), np.float32)
    compressed = target + rng.normal(0, [[[[0.01]]], [[[0.1]]], [[[0.0]]]], target.shape)
    exits = [rng.random(target.shape, np.float32) for _ in range(5)]
    weights = _weights([0.0, 2.0, 4.0])
    plain, _ = weighted_loss(exits, target, weights)
    got = np.asarray(weighted_loss(exits, target, weights, compressed, 1e-5)[0])
    mse_in = np.mean((compressed - target) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(got, np.asarray(plain) / (mse_in + 1e-5), rtol=1e-5)
    assert got[2] == pytest.approx(float(plain[2]) / 1e-5, rel=1e-5)  # lossless: eps bounds it


def test_step_with_relative_eps_reports_the_relative_loss():
    keras.utils.set_random_seed(0)
    model = build_model("tiny")
    step = TrainStep(model, tf.distribute.get_strategy(), 4, relative_eps=1e-4)
    rng = np.random.default_rng(4)
    target = rng.random((4, P, P, 1), np.float32)
    compressed = (target + rng.normal(0, 0.05, target.shape)).astype(np.float32)
    weights = _weights([0.0, 1.0, 2.0, 4.0])
    per_sample, _ = weighted_loss(model(compressed), target, weights)
    mse_in = np.mean((compressed - target) ** 2, axis=(1, 2, 3))
    expected = np.mean(np.asarray(per_sample) / (mse_in + 1e-4))
    loss, _, _ = step.step((compressed, target, weights), 1e-3)
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)


def test_weights_interpolate_between_table_rows():
    qf35 = severity("jpeg", 35)  # halfway between the QF 40 and QF 30 rows
    w = exit_weights([qf35, 0.25, 4.0])
    np.testing.assert_allclose(w[0], (EXIT_WEIGHTS[1] + EXIT_WEIGHTS[2]) / 2)
    np.testing.assert_allclose(w[1], 0.75 * EXIT_WEIGHTS[0] + 0.25 * EXIT_WEIGHTS[1])
    np.testing.assert_allclose(w[2], EXIT_WEIGHTS[4])


@pytest.mark.parametrize("codec,level", [("jpeg", 9), ("jpeg", 51), ("hevc", 21), ("hevc", 43)])
def test_levels_outside_the_table_are_rejected(codec, level):
    with pytest.raises(ValueError, match="outside the exit-weight table"):
        severity(codec, level)


def test_schedule_warms_up_then_decays_by_steps_or_time():
    assert [learning_rate(s, 1.0, warmup=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(10, 1.0, warmup=4, done=0.0) == 1.0
    assert learning_rate(10, 1.0, warmup=4, done=0.5) == pytest.approx((1 + FINAL_RATIO) / 2)
    assert learning_rate(10, 1.0, warmup=4, done=1.0) == pytest.approx(FINAL_RATIO)
    assert learning_rate(10, 0.3, "constant", done=0.9) == 0.3
    assert progress(50, 100) == 0.5 and progress(50, 100, 30, 40) == 0.75  # time is further
    assert progress(5, 0, 10, 40) == 0.25 and progress(500, 100) == 1.0


def test_weight_table_spec():
    np.testing.assert_array_equal(parse_weight_table("paper"), EXIT_WEIGHTS)
    np.testing.assert_array_equal(parse_weight_table("1,1,1,1,2"), [[1, 1, 1, 1, 2]] * 5)
    for bad in ("1,2,3", "a,b,c,d,e", "1,1,1,1,-1", "1,1,1,1,1;2,2,2,2,2"):
        with pytest.raises(ConfigError):
            parse_weight_table(bad)


# --- step ---------------------------------------------------------------------------------

def test_nan_batch_is_skipped_and_changes_nothing(tiny_step):
    rng = np.random.default_rng(1)
    target = rng.random((8, P, P, 1), np.float32)
    compressed = target.copy()
    compressed[3, 5, 5, 0] = np.nan
    tiny_step.optimizer.learning_rate = 2e-3  # the rate the step sets: not a change it makes
    before = [v.numpy() for v in tiny_step.model.weights + tiny_step.optimizer.variables]
    loss, _, norm = tiny_step.step((compressed, target, _weights([2.0] * 8)), 2e-3)
    assert not np.isfinite(norm.numpy()) and not np.isfinite(loss.numpy())
    after = [v.numpy() for v in tiny_step.model.weights + tiny_step.optimizer.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_short_run_lowers_the_loss(tiny_step):
    """A learnable synthetic degradation (a brightness offset): 20 steps cut the loss 5x."""
    rng = np.random.default_rng(2)

    def batch():
        target = 0.9 * rng.random((8, P, P, 1), np.float32)
        return target + 0.1, target, _weights(rng.uniform(0, 4, 8))

    held_out = batch()

    def loss():
        exits = tiny_step.model(held_out[0], training=False)
        return float(np.mean(weighted_loss(exits, held_out[1], held_out[2])[0]))

    before = loss()
    for _ in range(20):
        tiny_step.step(batch(), 2e-3)
    assert loss() < 0.2 * before


# --- validation -----------------------------------------------------------------------------

def test_validation_pads_crops_and_reports_delta_psnr(images):
    val = data.validation_images([images[1]], "jpeg", levels=[10, 50])
    shapes = []

    class Identity:  # five exits equal to the (padded) input
        def predict_on_batch(self, y):
            shapes.append(y.shape)
            return [y] * 5

    rows = Validator(val, 32)(Identity())
    assert shapes[0] == (1, 64, 96, 1)  # 40x72 padded to multiples of 32
    assert [r["level"] for r in rows] == [10, 50]
    for r in rows:
        assert r["dpsnr"] == [0.0] * 5 and r["psnr"] == [r["psnr_input"]] * 5
    assert "exit5" in format_table(rows, 7) and "mean" in format_table(rows, 7)


def test_validation_measures_what_the_evaluator_measures(images):
    """The PSNR a training run logs is the one ``rbqe_tf.evaluate`` reports: same padding
    (symmetric, bottom/right), same rounding, on a model whose exits differ."""
    from rbqe_tf.evaluation import Evaluator
    from rbqe_tf.metrics import psnr
    keras.utils.set_random_seed(3)
    model = build_model("tiny")
    for layer in model.layers:  # heads far from identity, so padding shows at the borders
        if layer.name.endswith("_pw"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * 40, bias])
    val = data.validation_images([images[1]], "jpeg", levels=[20])  # 40x72: padded
    rows = Validator(val, 32)(model)
    outputs = Evaluator(model, "jpeg").run(val[0].compressed)[0]
    expected = [psnr(o, val[0].gt) for o in outputs]
    assert len(set(np.round(expected, 2))) > 1  # the exits really differ
    np.testing.assert_allclose(rows[0]["psnr"], expected, atol=1e-3)


# --- distribution (subprocess: logical devices must be set before TF starts) -------------

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, keras, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from rbqe_tf.model import build_model
    from rbqe_tf.train_step import TrainStep, make_strategy
    rng = np.random.default_rng(0)
    target = rng.random((2, 4, 32, 32, 1), np.float32)
    compressed = np.clip(target + 0.05 * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
    exit_w = rng.uniform(0.5, 2, (2, 4, 2)).astype(np.float32)
    def seeded_model():  # a 2-exit network keeps tracing short
        keras.utils.set_random_seed(0)
        return build_model("tiny", num_levels=3)
    weights = {"init": [v.numpy() for v in seeded_model().weights]}
    for name in ("default", "mirrored"):
        strategy = make_strategy(name)
        ds = tf.data.Dataset.from_tensor_slices((compressed, target, exit_w))
        it = iter(strategy.experimental_distribute_dataset(ds))
        with strategy.scope():
            step = TrainStep(seeded_model(), strategy, 4)
        for _ in range(2):
            step.step(next(it), 1e-3)
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
    paths = checkpoint_paths(Path(run_dir, "checkpoints"))
    return int(paths[0].stem.split("-")[1]) if paths else None


def _checkpoint_weights(run_dir, step):
    """The model's arrays in a checkpoint, read with NumPy alone."""
    with np.load(Path(run_dir, "checkpoints", f"ckpt-{step}.npz")) as f:
        return [f[k] for k in sorted(k for k in f.files if k.startswith("model/"))]


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
    (["--variant=huge"], "unknown --variant"),
    (["--driver=torch"], "unknown --driver"),
    (["--driver=keras", "--strategy=mirrored"], "needs --driver tensorflow"),
    (["--mixed_bfloat16"], "needs --driver keras"),
    (["--train_from_stage=6"], "--train_from_stage must be in 1..5"),
    (["--steps=0"], "--time_budget"),
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
