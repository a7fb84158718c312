"""Run-directory state: checkpoints, graceful stop on SIGINT/SIGTERM, atomic file writes.

Checkpoints (``RUN_DIR/checkpoints``, ``tf.train.CheckpointManager``) hold the model,
the optimizer (Adam moments, iteration count), the step and the skipped-step count.
The data position is not stored: the training stream is a pure function of
``(seed, element index)`` (:mod:`rbqe_tf.data`), so a resumed run restarts it at
``start_index = step * global batch`` and sees exactly the batches it would have seen.

Interruptions: TensorFlow writes a checkpoint's data file, then its index (each by
rename), then the ``checkpoint`` state file (by rename), so a kill at any moment leaves
the earlier checkpoints whole; :meth:`Checkpoints.restore_latest` also skips newer ones
that do not read back (damaged on disk), falling back to the newest that does.
"""
import json
import logging
import os
import signal
from pathlib import Path

import tensorflow as tf

from rbqe_tf.files import write_atomically, write_text
from rbqe_tf.train_config import CHECKPOINT_DIR

log = logging.getLogger(__name__)
RESTORE_ERRORS = (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError)


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
        """Restores the newest checkpoint that reads back whole; returns its step (None if
        there is none).

        Newer checkpoints that fail (truncated, corrupt or missing files) are skipped with
        a warning naming each; ValueError (one line) if there are checkpoints but none
        restores. Every tensor is read (and checksummed) before anything is assigned, so
        a damaged checkpoint leaves the model as it was.
        """
        failed = []
        for path in checkpoint_paths(self.shared):
            try:
                read_all(path)
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except RESTORE_ERRORS as e:
                failed.append(f"{path}: {type(e).__name__}: {_first_line(e)}")
                continue
            for reason in failed:
                log.warning("skipped unreadable checkpoint %s", reason)
            self.saved_step = int(self.step_var.numpy())
            return self.saved_step
        if failed:
            raise ValueError(f"no checkpoint in {self.shared} restores ({len(failed)} tried; "
                             f"newest {failed[0]})")
        return None

    def save(self):
        """Saves at the current step (once per step); returns the chief's newest path."""
        step = int(self.step_var.numpy())
        if step != self.saved_step:
            self.manager.save(checkpoint_number=step)
            self.saved_step = step
            if not self.chief:
                tf.io.gfile.rmtree(str(self.directory))
        return tf.train.latest_checkpoint(str(self.shared))


def checkpoint_paths(directory):
    """Prefixes of the complete-looking checkpoints (``ckpt-N.index`` present) in
    ``directory``, newest step first. TensorFlow writes the index last, by rename, so
    a checkpoint interrupted while being written has none; the ``checkpoint`` state
    file is not consulted (it may lag behind or name a damaged checkpoint)."""
    steps = []
    for index in Path(directory).glob("ckpt-*.index"):
        number = index.name[len("ckpt-"):-len(".index")]
        if number.isdigit():
            steps.append(int(number))
    return [str(Path(directory) / f"ckpt-{n}") for n in sorted(steps, reverse=True)]


def read_all(path):
    """Reads every tensor of checkpoint ``path`` (TensorFlow verifies each checksum)."""
    reader = tf.train.load_checkpoint(path)
    for key in reader.get_variable_to_dtype_map():
        reader.get_tensor(key)


def _first_line(error):
    return (str(error).strip().splitlines() or [""])[0][:200]


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


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def export_model(model, path):
    """Saves ``model`` as a ``.keras`` file atomically (safe-mode loadable)."""
    write_atomically(path, lambda tmp: model.save(tmp, overwrite=True))
