"""Deep-supervision loss (docs/method.md, Exit weights): per sample Σ_k w_k · MSE(exit_k,
target), with the weights each patch carries (:class:`rbqe_tf.data.PatchSampler`).

Written with ``keras.ops`` so that every driver — the TensorFlow loop, the Keras
driver under any backend, and QAT — computes the same loss. ``relative_eps`` (beyond the
paper) divides a sample's loss by its input MSE + eps, so every level counts by its
relative error (≈ ΔPSNR) instead of its absolute MSE, which the heaviest level dominates.
"""
from keras import ops


def exit_mse(exits, target):
    """Per-sample, per-exit MSE [B, exits] (float32) of a list of exits [B, H, W, 1]."""
    target = ops.cast(target, "float32")
    return ops.stack([ops.mean(ops.square(ops.cast(e, "float32") - target), axis=(1, 2, 3))
                      for e in exits], axis=1)


def weighted_loss(exits, target, weights, compressed=None, relative_eps=0.0):
    """(per-sample loss [B], per-exit MSE [B, exits]); ``compressed`` is needed only for
    ``relative_eps`` > 0."""
    mse = exit_mse(exits, target)
    loss = ops.sum(ops.cast(weights, "float32") * mse, axis=1)
    if relative_eps:
        error = ops.cast(compressed, "float32") - ops.cast(target, "float32")
        loss = loss / (ops.mean(ops.square(error), axis=(1, 2, 3)) + relative_eps)
    return loss, mse
