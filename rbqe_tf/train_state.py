"""Run-directory state: checkpoints, graceful stop on SIGINT/SIGTERM, atomic file writes.

Checkpoints (``RUN_DIR/checkpoints``, ``tf.train.CheckpointManager``) hold the model,
the optimizer (Adam moments, iteration count), the step and the skipped-step count.
The data position is not stored: the training stream is a pure function of
``(seed, element index)`` (:mod:`rbqe_tf.data`), so a resumed run restarts it at
``start_index = step * global batch`` and sees exactly the batches it would have seen.
"""
import json
import os
import signal
import tempfile
from pathlib import Path

import tensorflow as tf

from rbqe_tf.train_config import CHECKPOINT_DIR


class Checkpoints:
    """CheckpointManager over model, optimizer and counters of a :class:`TrainStep`.

    Checkpoint numbers are step numbers. Every worker restores from
    ``RUN_DIR/checkpoints``; non-chief workers of a multi-worker run must save too (it
    is collective) but write to a scratch folder that is deleted again.
    """

    def __init__(self, run_dir, train_step, chief=True, max_to_keep=3):
        self.checkpoint = tf.train.Checkpoint(
            model=train_step.model, optimizer=train_step.optimizer,
            step=train_step.step_count, skipped=train_step.skipped)
        self.shared = Path(run_dir) / CHECKPOINT_DIR
        self.directory = self.shared if chief else Path(run_dir) / f".worker-{os.getpid()}"
        self.chief = chief
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory),
                                                  max_to_keep)
        self.step_var = train_step.step_count
        self.saved_step = None

    def restore_latest(self):
        """Restores the newest checkpoint; returns its step (None if there is none)."""
        latest = tf.train.latest_checkpoint(str(self.shared))
        if latest is None:
            return None
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        self.saved_step = int(self.step_var.numpy())
        return self.saved_step

    def save(self):
        """Saves at the current step (once per step); returns the chief's newest path."""
        step = int(self.step_var.numpy())
        if step != self.saved_step:
            self.manager.save(checkpoint_number=step)
            self.saved_step = step
            if not self.chief:
                tf.io.gfile.rmtree(str(self.directory))
        return tf.train.latest_checkpoint(str(self.shared))


class StopSignal:
    """Context manager recording the first SIGINT/SIGTERM in ``signum`` (the loop then
    finishes its step, saves and exits); a second signal acts as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.signum = signum
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        if self.signum is None:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
        return False


def atomic_write(path, write):
    """Calls ``write(temporary path)`` next to ``path``, then renames it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj):
    def write(tmp):
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")
    atomic_write(path, write)


def export_model(model, path):
    """Saves ``model`` as a ``.keras`` file atomically (safe-mode loadable)."""
    atomic_write(path, lambda tmp: model.save(tmp, overwrite=True))
