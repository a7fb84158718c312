"""A QAT run's checkpoint: what ``rbqe_tf.qat`` writes and ``export.tflite --from-qat``
reads back.

A run directory holds ``config.json`` (the run's config, the RBQE config, the command
line) and ``checkpoints/`` (:mod:`rbqe_tf.checkpoints`: the quantized model's variables,
the optimizer's, the step). The quantized model is rebuilt from the config, so
restoring deserializes no tf-keras layer. Import only in a QAT process (this imports
tensorflow-model-optimization; see :mod:`rbqe_tf.qat_model`).
"""
import json
from pathlib import Path

from rbqe_tf import qat_model
from rbqe_tf.checkpoints import CHECKPOINT_DIR, Checkpoints, checkpoint_paths
from rbqe_tf.config import RBQEConfig
from rbqe_tf.train_config import CONFIG_NAME


class QATError(Exception):
    """A QAT run directory or checkpoint that cannot be used."""


def load_qat(path):
    """(quantized model, RBQEConfig, run config dict, checkpoint path, step) of a QAT run
    directory (its latest checkpoint) or of one checkpoint file inside one."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent.parent
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise QATError(f"{path}: not a QAT run directory (no {CONFIG_NAME})")
    saved = json.loads(config_path.read_text())
    if "rbqe_config" not in saved:
        raise QATError(f"{path}: {CONFIG_NAME} is not from rbqe_tf.qat")
    if path.is_dir():
        paths = checkpoint_paths(run_dir / CHECKPOINT_DIR)
    else:
        paths = [path] if path.is_file() and path.parent.name == CHECKPOINT_DIR else []
    if not paths:
        raise QATError(f"{path}: no QAT checkpoint")
    cfg = RBQEConfig(**saved["rbqe_config"])
    qat = qat_model.build_qat(cfg)
    checkpoints = Checkpoints(run_dir, {"model": qat.weights})
    try:
        step, _ = checkpoints.restore(paths[0])
    except ValueError as e:
        raise QATError(f"{paths[0]}: {e}") from None
    return qat, cfg, saved, str(paths[0]), step
