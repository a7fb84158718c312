"""Per-patch maps of the blind quality score, for a fixed-size TFLite model
(docs/method.md, Quality score).

:func:`rbqe_tf.iqa.quality_score` averages per-patch values over a whole image. The
runner needs those values before the average: it scores only the patches inside
the image (a tile is mirror-padded) and pools patches over several tiles. So the
exported score model stops at the per-patch values and :mod:`rbqe_tf.score_pooling` does
the masked means with NumPy. The math is ``quality_score``'s, step for step, on its
constants; ``tests/test_export.py`` checks that the two give the same Q.
"""
import math

import tensorflow as tf

from rbqe_tf import iqa
from rbqe_tf.levels import BLOCK_SIZE, check_codec

MAP_CHANNELS = ("blockiness", "textured", "blur")
"""Channels of the maps: a patch's blockiness score, 1 if textured else 0, its blur score."""


def patch_maps(y, codec):
    """[N, H, W, 1] Y in [0, 1] → [N, H/B − 1, W/B − 1, 3] per-patch maps (MAP_CHANNELS)."""
    b = BLOCK_SIZE[check_codec(codec)]
    c = iqa._constants(b)
    y = tf.cast(tf.convert_to_tensor(y), tf.float32)
    x = iqa._patch_grid(tf.round(tf.clip_by_value(y, 0.0, 1.0) * 255.0), b)

    energy = tf.nn.avg_pool2d(x * x, b, b, "VALID") * float(b * b)
    nonzero = tf.minimum(energy, 1.0)
    m = tf.nn.conv2d(x, c["moments"], b, "VALID") * (
        c["scale"] * tf.math.rsqrt(tf.maximum(energy, 1.0)))
    ssm = tf.reduce_sum(m * m, -1, keepdims=True)
    textured = iqa._step(ssm - iqa._SSM_THRESHOLD)

    abs_m = tf.abs(m)
    d = tf.reduce_sum(abs_m, -1, keepdims=True) + iqa._C
    q_v = tf.minimum(tf.reduce_sum(abs_m * c["last_row"], -1, keepdims=True) / d, iqa._MAX_Q)
    q_h = tf.minimum(tf.reduce_sum(abs_m * c["last_col"], -1, keepdims=True) / d, iqa._MAX_Q)
    blockiness = tf.math.log(1.0 - (q_v + q_h) / 2.0) / math.log(1.0 - iqa._MAX_Q)
    blockiness = nonzero * blockiness + (1.0 - nonzero)

    raw_b = tf.nn.conv2d(x, c["blurred"], b, "VALID")
    m_b = raw_b * c["dc_mask"] * tf.math.rsqrt(
        tf.maximum(tf.reduce_sum(raw_b * raw_b, -1, keepdims=True), 1e-6))
    sim = tf.reduce_mean((2.0 * m * m_b + iqa._C) / (m * m + m_b * m_b + iqa._C), -1,
                         keepdims=True)
    return tf.concat([blockiness, textured, tf.maximum(1.0 - sim, 0.0)], -1)
