"""Run-directory state every training driver shares: graceful stop on SIGINT/SIGTERM,
the resolved config of every launch, atomic JSON and model files (no TensorFlow)."""
import json
import signal
import time

import keras

from rbqe_tf.files import write_atomically, write_text
from rbqe_tf.train_config import CONFIG_NAME


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


def record_config(cfg, run_dir, resumed, start_step, argv, unreadable=(), **extra):
    """Writes config.json: this launch's resolved config, command line, start step, Keras
    backend and unreadable training images (and ``extra``); earlier launches of a resumed
    run are kept under ``previous``. Returns the previous launch's unreadable images
    (None: none recorded)."""
    path = run_dir / CONFIG_NAME
    previous = []
    if path.is_file() and resumed:
        old = json.loads(path.read_text())
        previous = old.pop("previous", []) + [old]
    write_json(path, {
        "config": cfg.to_dict(), "command": list(argv), "start_step": start_step,
        "keras": keras.version(), "backend": keras.backend.backend(), "time": time.time(),
        "unreadable_images": list(unreadable), **extra, "previous": previous})
    return previous[-1].get("unreadable_images") if previous else None
