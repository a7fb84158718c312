"""A QAT run's checkpoint: what ``rbqe_tf.qat`` writes and ``export.tflite --from-qat``
reads back.

A run directory holds ``config.json`` (the run's config, the RBQE config, the command
line) and ``checkpoints/`` (``tf.train.Checkpoint`` of the quantized model, the step and,
while training, the optimizer). The quantized model is rebuilt from the config, so
restoring deserializes no tf-keras layer. Import only in a QAT process (this imports
tensorflow-model-optimization; see :mod:`rbqe_tf.qat_model`).
"""
import json
from pathlib import Path

import tensorflow as tf

from rbqe_tf import qat_model
from rbqe_tf.config import RBQEConfig
from rbqe_tf.train_config import CHECKPOINT_DIR, CONFIG_NAME


class QATError(Exception):
    """A QAT run directory or checkpoint that cannot be used."""


def checkpoint(qat, optimizer=None):
    """(``tf.train.Checkpoint`` of ``qat``, its step and ``optimizer``; the step variable)."""
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    objects = {"model": qat, "step": step}
    if optimizer is not None:
        objects["optimizer"] = optimizer
    return tf.train.Checkpoint(**objects), step


def load_qat(path):
    """(quantized model, RBQEConfig, run config dict, checkpoint path, step) of a QAT run
    directory (its latest checkpoint) or of one checkpoint prefix inside one."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent.parent
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise QATError(f"{path}: not a QAT run directory (no {CONFIG_NAME})")
    saved = json.loads(config_path.read_text())
    if "rbqe_config" not in saved:
        raise QATError(f"{path}: {CONFIG_NAME} is not from rbqe_tf.qat")
    prefix = (tf.train.latest_checkpoint(str(run_dir / CHECKPOINT_DIR)) if path.is_dir()
              else str(path))
    if not prefix or not tf.io.gfile.exists(prefix + ".index"):
        raise QATError(f"{path}: no QAT checkpoint")
    cfg = RBQEConfig(**saved["rbqe_config"])
    qat = qat_model.build_qat(cfg)
    saved_checkpoint, step = checkpoint(qat)
    saved_checkpoint.read(prefix).expect_partial().assert_existing_objects_matched()
    return qat, cfg, saved, prefix, int(step.numpy())
