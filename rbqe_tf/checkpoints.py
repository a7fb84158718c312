"""Training checkpoints every driver writes and reads (NumPy and the standard library, so
any Keras backend, the TensorFlow loop and QAT share one format).

``RUN_DIR/checkpoints/ckpt-<step>.npz`` holds the step, counters and every variable of
named groups (the model's weights, the optimizer's slots), in the groups' own order. A
checkpoint is written to a temporary file and renamed (:mod:`rbqe_tf.files`), so a kill
at any moment leaves the earlier ones whole; the zip format checksums every array (CRC-32),
and :meth:`Checkpoints.restore_latest` reads a checkpoint whole, and checks it against
the variables, before assigning anything, falling back to the newest one that passes.
The data position needs no saving: batch n is a pure function of (seed, n)
(:mod:`rbqe_tf.data`).
"""
import logging
import re
import zipfile
from pathlib import Path

import numpy as np

from rbqe_tf.files import remove_orphan_temps, write_atomically

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"  # inside the run directory
_NAME = re.compile(r"ckpt-(\d+)\.npz")
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def has_checkpoint(run_dir):
    """Whether ``run_dir`` holds a training checkpoint."""
    return bool(checkpoint_paths(Path(run_dir) / CHECKPOINT_DIR))


def checkpoint_paths(directory):
    """The checkpoints in ``directory``, newest step first."""
    found = [(int(m.group(1)), p) for p in Path(directory).glob("ckpt-*.npz")
             if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


class Checkpoints:
    """Saves and restores ``groups`` ({name: [variables]}) of one run directory.

    Only the ``chief`` writes (the other workers of a multi-worker run hold the same
    values); every worker restores. The newest ``keep`` checkpoints are kept.
    """

    def __init__(self, run_dir, groups, chief=True, keep=3):
        self.directory = Path(run_dir) / CHECKPOINT_DIR
        self.groups, self.chief, self.keep = groups, chief, keep
        self.saved_step = None

    def save(self, step, counters=None):
        """Writes ``ckpt-<step>.npz`` (once per step) → its path."""
        path = self.directory / f"ckpt-{step}.npz"
        if step == self.saved_step or not self.chief:
            return path
        arrays = {"step": np.int64(step)}
        arrays.update({f"counter/{k}": np.int64(v) for k, v in (counters or {}).items()})
        for name, variables in self.groups.items():
            for i, v in enumerate(variables):
                arrays[f"{name}/{i:05d}"] = np.asarray(v.numpy())
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_orphan_temps(self.directory)

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        write_atomically(path, write)
        self.saved_step = step
        for old in checkpoint_paths(self.directory)[self.keep:]:
            old.unlink(missing_ok=True)
        return path

    def restore(self, path):
        """Assigns the checkpoint ``path`` → (step, counters); ValueError (one line) if it
        does not read back whole or does not fit the variables."""
        try:
            step, counters, values = self._read(path)
        except _READ_ERRORS as e:
            raise ValueError(f"{type(e).__name__}: {_first_line(e)}") from None
        for name, variables in self.groups.items():
            for v, value in zip(variables, values[name]):
                v.assign(value)
        self.saved_step = step
        return step, counters

    def restore_latest(self):
        """Assigns the newest checkpoint that reads back whole and fits the variables →
        (step, counters), or None if there is none. Newer ones that fail are skipped with
        a warning naming each; ValueError (one line) if there are checkpoints but none
        restores."""
        failed = []
        for path in checkpoint_paths(self.directory):
            try:
                restored = self.restore(path)
            except ValueError as e:
                failed.append(f"{path}: {e}")
                continue
            for reason in failed:
                log.warning("skipped unreadable checkpoint %s", reason)
            return restored
        if failed:
            raise ValueError(f"no checkpoint in {self.directory} restores ({len(failed)} "
                             f"tried; newest {failed[0]})")
        return None

    def _read(self, path):
        with zipfile.ZipFile(path) as z:
            damaged = z.testzip()  # reads every member whole, checking its CRC-32
        if damaged is not None:
            raise ValueError(f"{damaged} fails its checksum")
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        values = {}
        for name, variables in self.groups.items():
            keys = sorted(k for k in arrays if k.startswith(f"{name}/"))
            if len(keys) != len(variables):
                raise ValueError(f"holds {len(keys)} {name} variables, this run has "
                                 f"{len(variables)}")
            for k, v in zip(keys, variables):
                if tuple(arrays[k].shape) != tuple(v.shape):
                    raise ValueError(f"{k} has shape {arrays[k].shape}, this run's {v.shape}")
            values[name] = [arrays[k] for k in keys]
        counters = {k.split("/", 1)[1]: int(arrays[k]) for k in arrays
                    if k.startswith("counter/")}
        return int(arrays["step"]), counters, values


def _first_line(error):
    return (str(error).strip().splitlines() or [""])[0][:200]
