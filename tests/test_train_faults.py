"""Training under faults: damaged checkpoints are skipped on resume, and a real training
process killed (SIGKILL) or stopped (SIGTERM) at random moments, checkpointing every
step, always resumes from a loadable checkpoint with its step count going on."""
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from rbqe_tf.checkpoints import Checkpoints, checkpoint_paths
from rbqe_tf.model import build_model
from rbqe_tf.train_step import TrainStep

REPO = Path(__file__).resolve().parents[1]


def _groups(step):
    return {"model": step.model.weights, "optimizer": step.optimizer.variables}


def _variables(step):
    return step.model.weights + step.optimizer.variables


@pytest.fixture(scope="module")
def train_step():
    keras.utils.set_random_seed(0)
    return TrainStep(build_model("tiny"), tf.distribute.get_strategy(), 2)


@pytest.fixture(scope="module")
def saved(train_step, tmp_path_factory):
    """A run folder with checkpoints at steps 1, 2, 3 (distinct values in every variable)
    and the values each holds."""
    run_dir = tmp_path_factory.mktemp("saved")
    checkpoints = Checkpoints(run_dir, _groups(train_step))
    values, rng = {}, np.random.default_rng(0)
    for step in (1, 2, 3):
        values[step] = [rng.integers(0, 100, v.shape).astype(v.numpy().dtype)
                        for v in _variables(train_step)]
        _assign(train_step, values[step])
        checkpoints.save(step, {"skipped": 10 * step})
    return run_dir, values


def _assign(train_step, values=None):
    """Sets every variable to ``values`` (default: zeros)."""
    variables = _variables(train_step)
    for v, x in zip(variables, values or [np.zeros(v.shape, v.numpy().dtype) for v in variables]):
        v.assign(x)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
    """Flips one bit in the middle of the largest array's data (a flip in a zip header field
    that holds nothing, e.g. a time stamp, would damage nothing)."""
    with zipfile.ZipFile(path) as z:
        member = max(z.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    start = member.header_offset + 30 + int.from_bytes(raw[member.header_offset + 26:
                                                           member.header_offset + 28], "little")
    start += int.from_bytes(raw[member.header_offset + 28:member.header_offset + 30], "little")
    raw[start + member.file_size // 2] ^= 0x01
    path.write_bytes(bytes(raw))


NEWEST = "ckpt-3.npz"


def _other_model(d):
    """A whole checkpoint of a model with other shapes (e.g. another variant)."""
    keras.utils.set_random_seed(1)
    other = build_model("tiny", features=8)
    Checkpoints(d.parent / "other", {"model": other.weights}).save(3)
    shutil.copy(d.parent / "other" / "checkpoints" / NEWEST, d / NEWEST)


DAMAGE = {
    "truncated": lambda d: _truncate(d / NEWEST),
    "bit flipped": lambda d: _flip(d / NEWEST),
    "empty": lambda d: (d / NEWEST).write_bytes(b""),
    "not a zip": lambda d: (d / NEWEST).write_text("checkpoint"),
    "another model": _other_model,
}


def _restore_copy(saved, tmp_path, train_step, damage=None):
    run_dir = tmp_path / "run"
    shutil.copytree(saved[0], run_dir)
    if damage:
        damage(run_dir / "checkpoints")
    _assign(train_step)  # zeros, so that every restored value is visible
    return Checkpoints(run_dir, _groups(train_step)).restore_latest()


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_newest_checkpoint_falls_back_to_the_previous(saved, train_step, tmp_path,
                                                              caplog, damage):
    with caplog.at_level(logging.WARNING):
        step = _restore_copy(saved, tmp_path, train_step, DAMAGE[damage])
    assert step == (2, {"skipped": 20})
    for got, want in zip((v.numpy() for v in _variables(train_step)), saved[1][2]):
        np.testing.assert_array_equal(got, want)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith("skipped unreadable checkpoint ")
    assert "ckpt-3" in warnings[0] and "\n" not in warnings[0]


def test_interrupted_write_is_ignored_and_a_complete_unlisted_one_is_used(saved, train_step,
                                                                         tmp_path, caplog):
    def leftovers(d):  # a kill inside step 5's save, and step 4 complete (a copy of step 3)
        (d / ".tmp-999999-abc.npz").write_bytes((d / NEWEST).read_bytes()[:99])
        (d / "ckpt-5.npz.part").write_bytes(b"x" * 99)
        shutil.copy(d / NEWEST, d / "ckpt-4.npz")
    with caplog.at_level(logging.WARNING):
        assert _restore_copy(saved, tmp_path, train_step, leftovers)[0] == 3  # ckpt-4 holds 3
    assert not caplog.records
    assert [p.name for p in checkpoint_paths(tmp_path / "run" / "checkpoints")] == [
        "ckpt-4.npz", "ckpt-3.npz", "ckpt-2.npz", "ckpt-1.npz"]


def test_no_restorable_checkpoint_is_a_one_line_error(saved, train_step, tmp_path):
    def damage_all(d):
        for path in d.glob("*.npz"):
            _truncate(path)
    with pytest.raises(ValueError, match=r"no checkpoint in .* restores \(3 tried; newest "
                                         r".*ckpt-3.npz: ") as error:
        _restore_copy(saved, tmp_path, train_step, damage_all)
    assert "\n" not in str(error.value)
    assert Checkpoints(tmp_path / "empty", _groups(train_step)).restore_latest() is None


def test_only_the_newest_three_are_kept_and_the_chief_alone_writes(train_step, tmp_path):
    chief = Checkpoints(tmp_path, _groups(train_step))
    for step in range(1, 6):
        chief.save(step)
    assert [p.name for p in checkpoint_paths(tmp_path / "checkpoints")] == [
        "ckpt-5.npz", "ckpt-4.npz", "ckpt-3.npz"]
    Checkpoints(tmp_path / "worker", _groups(train_step), chief=False).save(6)
    assert not (tmp_path / "worker").exists()


# --- a real training process, interrupted at random moments -------------------------------

def _images(directory):
    rng = np.random.default_rng(0)
    directory.mkdir()
    for i in range(3):
        y = cv2.GaussianBlur(rng.uniform(0, 255, (64, 96)).astype(np.float32), (0, 0), 2)
        cv2.imwrite(str(directory / f"im{i}.png"), np.clip(y * 4 - 384, 0, 255).astype(np.uint8))
    (directory / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return directory


def _launch(data_dir, run_dir, resume):
    cmd = [sys.executable, "-m", "rbqe_tf.train", f"--data={data_dir}", f"--run_dir={run_dir}",
           "--variant=tiny", "--patch=32", "--batch=2", "--steps=100000", "--ckpt_every=1",
           "--log_every=1000", "--lr_schedule=constant"] + (["--resume"] if resume else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _newest(checkpoint_dir):
    paths = checkpoint_paths(checkpoint_dir)
    return int(paths[0].stem.split("-")[1]) if paths else -1


def _interrupt(proc, checkpoint_dir, after, signum, rng, mid_write):
    """Waits until ``proc`` has checkpointed beyond step ``after``, then sends ``signum``
    at a random moment (``mid_write``: while a checkpoint is being written)."""
    deadline = time.time() + 400
    while _newest(checkpoint_dir) <= after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(rng.uniform(0, 0.5))
    while mid_write and time.time() < deadline and not any(
            p.name.startswith(".tmp-") for p in checkpoint_dir.iterdir()):
        time.sleep(0.0005)
    proc.send_signal(signum)
    return proc.communicate(timeout=300)


@pytest.mark.slow
def test_kills_at_random_moments_always_resume_from_a_loadable_checkpoint(tmp_path, train_step):
    data_dir, run_dir = _images(tmp_path / "data"), tmp_path / "run"
    checkpoint_dir = run_dir / "checkpoints"
    rng = random.Random(os.getpid())  # different moments on every run
    # Each launch costs ~30 s of CPU (TensorFlow start, tracing); test_train.py adds a
    # SIGKILL between checkpoints and a SIGTERM of its own.
    plan = [(signal.SIGKILL, True), (signal.SIGTERM, False)]
    resumed_at = None
    for launch, (signum, mid_write) in enumerate(plan):
        if launch == 1:  # damaged while the run was down: skipped and reported
            (data_dir / "im2.png").write_bytes(b"")
        proc = _launch(data_dir, run_dir, resume=launch > 0)
        out, err = _interrupt(proc, checkpoint_dir, resumed_at or 0, signum, rng, mid_write)
        lines = out.splitlines()
        if launch:
            assert lines[0] == f"resumed {run_dir} at step {resumed_at}", (out, err[-3000:])
        unreadable = 2 if launch else 1
        assert f"skipped {unreadable} unreadable training image(s)" in out
        assert ("differs from the previous launch's" in out) == (launch == 1)
        config = json.loads((run_dir / "config.json").read_text())
        assert len(config["unreadable_images"]) == unreadable
        if signum == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM and "stopped by signal" in lines[-1]
        else:
            assert proc.returncode == -signal.SIGKILL
        newest = _newest(checkpoint_dir)
        assert newest > (resumed_at or 0)
        # What the next launch must resume from: the newest checkpoint, read back whole.
        _assign(train_step)
        assert Checkpoints(run_dir, _groups(train_step)).restore_latest()[0] == newest
        resumed_at = newest
