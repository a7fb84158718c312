"""TensorBoard scalars of the TensorFlow training driver.

Scalars are written with the core ``tf.summary.write`` and the scalars plugin's
metadata, so event files are complete without the ``tensorboard`` package installed
(view them with TensorBoard anywhere).
"""
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def scalar(tag, value, step):
    """Writes one scalar to the default summary writer (like ``tf.summary.scalar``)."""
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=_SCALAR_METADATA)


def write_train(step, meter, learning_rate, skipped):
    """TensorBoard: loss, per-exit MSE, learning rate, skipped steps, steps/s
    (``meter``: :class:`rbqe_tf.training.Meter`)."""
    loss, mse = meter.means()
    scalar("train/loss", loss, step)
    for k, m in enumerate([] if mse is None else mse, 1):
        scalar(f"train/mse_exit{k}", m, step)
    scalar("train/learning_rate", learning_rate, step)
    scalar("train/skipped_steps", skipped, step)
    scalar("train/steps_per_s", meter.rate(), step)


def write_validation(rows, step):
    """Scalars ``val_psnr/<codec><level>/exit<k>``, ``val_dpsnr/…`` to the default writer."""
    for r in rows:
        for k, (p, d) in enumerate(zip(r["psnr"], r["dpsnr"]), 1):
            scalar(f"val_psnr/{r['codec']}{r['level']}/exit{k}", p, step)
            scalar(f"val_dpsnr/{r['codec']}{r['level']}/exit{k}", d, step)
    for k, d in enumerate(np.mean([r["dpsnr"] for r in rows], axis=0), 1):
        scalar(f"val_dpsnr/mean/exit{k}", d, step)
