"""Training logs: running means for the progress bar and TensorBoard scalars.

Scalars are written with the core ``tf.summary.write`` and the scalars plugin's
metadata, so event files are complete without the ``tensorboard`` package installed
(view them with TensorBoard anywhere).
"""
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def scalar(tag, value, step):
    """Writes one scalar to the default summary writer (like ``tf.summary.scalar``)."""
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=_SCALAR_METADATA)


class Meter:
    """Running means of the loss and per-exit MSE, and steps/s, since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.n, self.loss, self.mse, self.start = 0, 0.0, 0.0, time.perf_counter()

    def add(self, loss, mse):
        self.n += 1
        self.loss += float(loss)
        self.mse = self.mse + np.asarray(mse, np.float64)

    def means(self):
        return self.loss / max(self.n, 1), np.atleast_1d(self.mse / max(self.n, 1))

    def rate(self):
        return self.n / max(time.perf_counter() - self.start, 1e-9)

    def postfix(self, skipped):
        loss, mse = self.means()
        return f"loss {loss:.3e} | mse/exit {' '.join(f'{m:.2e}' for m in mse)} | skipped {skipped}"

    def write(self, step, learning_rate, skipped):
        """TensorBoard: loss, per-exit MSE, learning rate, skipped steps, steps/s."""
        loss, mse = self.means()
        scalar("train/loss", loss, step)
        for k, m in enumerate(mse, 1):
            scalar(f"train/mse_exit{k}", m, step)
        scalar("train/learning_rate", learning_rate, step)
        scalar("train/skipped_steps", skipped, step)
        scalar("train/steps_per_s", self.rate(), step)
