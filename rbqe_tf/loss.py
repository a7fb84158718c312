"""Deep-supervision loss (DESIGN §2): per sample, Σ_k w_k(severity) · MSE(exit_k, target).

The weights come from a table with one row per severity 0, 1, …, R-1 (default: the
paper's table, :data:`rbqe_tf.levels.EXIT_WEIGHTS`; others via
:func:`rbqe_tf.train_config.parse_weight_table`) and are linearly interpolated between
rows, exactly like :func:`rbqe_tf.levels.exit_weights`. A severity outside
0..R-1 is rejected (``tf.errors.InvalidArgumentError``). ``relative_to_input`` optionally
divides a sample's loss by its input MSE (``--relative_eps``).
"""
import tensorflow as tf

from rbqe_tf.levels import EXIT_WEIGHTS


def exit_weights(severity, table=EXIT_WEIGHTS):
    """Interpolated weights [B, num_exits] for severities [B] (float); rejects out-of-range."""
    table = tf.constant(table, tf.float32)
    rows = tf.shape(table)[0]
    severity = tf.convert_to_tensor(severity, tf.float32)
    top = tf.cast(rows - 1, tf.float32)
    tf.debugging.assert_equal(
        tf.reduce_all((severity >= 0.0) & (severity <= top)), True,
        message="severity outside the exit-weight table's range [0, rows-1]")
    lower = tf.minimum(tf.cast(tf.floor(severity), tf.int32), rows - 2)
    frac = (severity - tf.cast(lower, tf.float32))[:, None]
    return tf.gather(table, lower) * (1.0 - frac) + tf.gather(table, lower + 1) * frac


def exit_mse(exits, target):
    """Per-sample, per-exit MSE [B, num_exits] (computed in float32)."""
    target = tf.cast(target, tf.float32)
    return tf.stack([tf.reduce_mean(tf.square(tf.cast(e, tf.float32) - target), axis=[1, 2, 3])
                     for e in exits], axis=1)


def relative_to_input(per_sample, compressed, target, eps):
    """``per_sample`` loss [B] divided by each sample's input MSE + ``eps``: every level then
    counts by its relative error (≈ ΔPSNR) instead of its absolute MSE, which the heaviest
    level dominates (HEVC QP 42's MSE is ~30× QP 22's). Beyond the paper."""
    error = tf.cast(compressed, tf.float32) - tf.cast(target, tf.float32)
    mse_in = tf.reduce_mean(tf.square(error), axis=[1, 2, 3])
    return per_sample / (mse_in + eps)


def weighted_loss(exits, target, severity, table=EXIT_WEIGHTS):
    """(per-sample loss [B], per-exit MSE [B, num_exits])."""
    mse = exit_mse(exits, target)
    return tf.reduce_sum(exit_weights(severity, table) * mse, axis=1), mse
