"""The blind Tchebichef quality score Q (RBQE's exit criterion) in TF ops; the steps are
those of docs/method.md, "Quality score".

:func:`quality_score` and :func:`patch_maps` (its per-patch values, before the means)
are batched and traceable: plain TensorFlow ops on 4-D tensors, no Keras, no loops, so
they run inside a ``tf.function`` (static or dynamic H, W) and convert to TFLite with
builtin ops only (quality_score: STRIDED_SLICE, ROUND, MINIMUM, MAXIMUM, RELU, MUL,
ADD, SUB, DIV, CONV_2D, RSQRT, SUM, MEAN, ABS, LOG, POW, RESHAPE).

How the steps map to ops:

- The B×B patches of the grid shifted by B/2 are the image cropped by B/2 at the
  top/left to (⌊H/B⌋−1)·B rows (same for columns), read by stride-B ops.
- The Tchebichef basis T is orthonormal with a constant row 0, so for a patch P the
  moments of step 4 (normalise, remove the mean, M = T·P̃·Tᵀ) are the raw
  moments T·P·Tᵀ divided by ‖P‖_F with M00 set to 0: mean removal changes M00 only.
  The raw moments are one stride-B conv with B² fixed kernels t_p ⊗ t_q and ‖P‖²_F is
  a stride-B conv of P² with a ones kernel (faster than AVERAGE_POOL_2D in TF on CPU).
  The same M is used for the blockiness (step 6) and the similarity (step 7).
- Blurring a patch alone (3×3 Gaussian, σ = 5, zero padding inside the patch) is
  P ↦ A·P·Aᵀ for a tridiagonal B×B matrix A (the 2-D Gaussian is separable), so the
  raw moments of the blurred patch are another stride-B conv with the kernels
  (T·A)_p ⊗ (T·A)_q; by Parseval ‖A·P·Aᵀ‖_F is the norm of those raw moments.
  M_b is then normalised, mean-removed and projected like M.
- Branch masks and empty-set means are arithmetic (min/max/mul), not selects.

Numerics: the score is invariant to the pixel scale, so it works on the 8-bit levels
x = round(clip(y, 0, 1)·255) (``tf.round`` rounds half to even, like ``np.round``)
without the /255. The moment kernels are the Tchebichef polynomials as coprime
integers (the normalisation is applied after the conv), so in float32 every raw
moment and ‖P‖² is an exact integer: flat patches have exactly zero moments (their
blockiness is 0, not an artefact of C = 1e-5) and the smooth/textured decision
matches float64. The scale is applied in a product with a non-constant factor so that
graph optimisers cannot fold it into the integer kernels. Float32 arithmetic is
assumed: reduced-precision convs (TF32 on recent NVIDIA GPUs, fp16 GPU delegates)
perturb the score.

Edge cases: an all-zero patch is smooth with score 1 (step 4); a flat non-zero
patch is smooth with score 0 (so a flat image scores 0, an all-zero one 1); with no
smooth (textured) patches S_blk (S_blur) is 1, so an image with fewer than two blocks
in a dimension (no patches) scores 1.0.
"""
import functools
import math
from fractions import Fraction

import numpy as np
import tensorflow as tf

from rbqe_tf.levels import BLOCK_SIZE, PUBLISHED_THRESHOLDS, check_codec

DEFAULT_THRESHOLDS = PUBLISHED_THRESHOLDS
"""Published exit thresholds τ: exit at the first k ≤ 4 with Q(exit_k) ≥ τ (docs/method.md,
"Decision")."""

_SSM_THRESHOLD = 0.004  # textured if SSM > this
_MAX_Q = 0.05  # clip of Qv and Qh
_C = 1e-5
_BLUR_SIGMA = 5.0
_W_BLOCK, _W_BLUR = 0.9, 0.1


def _integer_tchebichef(block_size):
    """[B, B] int64: row p is t_p of the method's step 3 (exact recurrence) as coprime integers."""
    b = block_size
    t = [[Fraction(1)] * b, [Fraction(2 * u + 1 - b, b) for u in range(b)]]
    for p in range(2, b):
        t.append([((2 * p - 1) * t[1][u] * t[p - 1][u]
                   - (p - 1) * (1 - Fraction((p - 1) ** 2, b * b)) * t[p - 2][u]) / p
                  for u in range(b)])
    rows = []
    for row in t[:b]:
        scaled = [int(f * math.lcm(*(g.denominator for g in row))) for f in row]
        rows.append([v // math.gcd(*scaled) for v in scaled])
    return np.array(rows, np.int64)


def tchebichef_basis(block_size):
    """Orthonormal discrete Tchebichef basis, float64 [B, B], rows = orders 0..B−1.

    Equal to docs/method.md, "Quality score", step 3 (t_p / √ρ(p)); for B = 4 row 1 is
    [−0.6708, −0.2236, 0.2236, 0.6708].
    """
    rows = _integer_tchebichef(block_size).astype(np.float64)
    return rows / np.sqrt((rows ** 2).sum(1, keepdims=True))


def _blur_matrix(block_size):
    """A with A·P·Aᵀ = P filtered by the normalised 3×3 Gaussian (σ = 5), zero padding."""
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * _BLUR_SIGMA ** 2))
    g /= g.sum()
    return sum(g[k + 1] * np.eye(block_size, k=k) for k in (-1, 0, 1))


def _moment_kernels(rows):
    """[B, B, 1, B²] conv kernels; channel p·B+q is the outer product rows[p] ⊗ rows[q]."""
    b = len(rows)
    return np.einsum("pu,qv->uvpq", rows, rows).reshape(b, b, 1, b * b).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _constants(block_size):
    b = block_size
    ints = _integer_tchebichef(b)
    norms = np.sqrt((ints.astype(np.float64) ** 2).sum(1))
    scale = 1.0 / np.outer(norms, norms)
    scale[0, 0] = 0.0  # mean removal zeroes M00
    dc_mask = np.ones((b, b))
    dc_mask[0, 0] = 0.0
    last_row, last_col = np.zeros((b, b)), np.zeros((b, b))
    last_row[b - 1, :] = 1.0
    last_col[:, b - 1] = 1.0
    blurred = (ints / norms[:, None]) @ _blur_matrix(b)

    def as_channels(a):
        return a.reshape(1, 1, 1, b * b).astype(np.float32)

    return {"moments": _moment_kernels(ints), "blurred": _moment_kernels(blurred),
            "ones": np.ones((b, b, 1, 1), np.float32),
            "scale": as_channels(scale), "dc_mask": as_channels(dc_mask),
            "last_row": as_channels(last_row), "last_col": as_channels(last_col)}


def _patch_grid(x, block_size):
    """Crops [N, H, W, 1] to the patches of the grid shifted by B/2 (stride-B tiles)."""
    b, half = block_size, block_size // 2
    extents = []
    for axis in (1, 2):
        size = x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]
        n = size // b - 1
        extents.append(max(n, 0) * b if isinstance(n, int) else tf.maximum(n, 0) * b)
    return x[:, half:half + extents[0], half:half + extents[1], :]


def _step(x):
    """1.0 where x > 0 else 0.0, for float32 x that is 0 or of magnitude ≥ 2^-99.

    (SSM − 0.004 is 0 or at least 2^-31 in magnitude: exact by Sterbenz near 0.004.)
    """
    return tf.clip_by_value(x * 2.0 ** 100, 0.0, 1.0)


def _masked_mean(values, mask):
    """Per-image mean of ``values`` over patches where ``mask`` is 1; 1.0 if there are none."""
    count = tf.reduce_sum(mask, (1, 2), keepdims=True)
    empty = 1.0 - tf.minimum(count, 1.0)
    return (tf.reduce_sum(values * mask, (1, 2), keepdims=True) + empty) / (count + empty)


def patch_maps(y, codec="jpeg"):
    """Per-patch values of the quality score before the averages: [N, ⌊H/B⌋−1, ⌊W/B⌋−1, 3].

    Channels: the patch's blockiness score s (step 6; meaningful where smooth), 1.0 if
    textured else 0.0 (step 5), its blur score 1 − sim (step 7; meaningful where
    textured). Arguments as for :func:`quality_score`.
    """
    return tf.concat(_patch_values(y, codec), -1)


def quality_score(y, codec="jpeg"):
    """Blind quality score Q (docs/method.md, "Quality score"), float32 [N], each in [0, 1]
    (higher = better).

    ``y``: [N, H, W, 1] Y plane in [0, 1], any float dtype (tensor or NumPy array); it
    is cast to float32 and rounded to 8 bits (x = round(clip(y, 0, 1)·255)/255, half
    to even) as the exit rule sees it. ``codec`` ("jpeg" or "hevc") sets B = 8 or 4.
    """
    blockiness, textured, blur = _patch_values(y, codec)
    s_blk = _masked_mean(blockiness, 1.0 - textured)
    s_blur = _masked_mean(blur, textured)
    q = tf.minimum(tf.pow(s_blk, _W_BLOCK) * tf.pow(s_blur, _W_BLUR), 1.0)
    return tf.reshape(q, [-1])


def _patch_values(y, codec):
    """(blockiness, textured, blur) per patch, each [N, ⌊H/B⌋−1, ⌊W/B⌋−1, 1]."""
    b = BLOCK_SIZE[check_codec(codec)]
    c = _constants(b)
    y = tf.cast(tf.convert_to_tensor(y), tf.float32)
    if y.shape.rank != 4 or y.shape[-1] != 1:
        raise ValueError(f"expected a [N, H, W, 1] Y plane, got shape {y.shape}")
    x = _patch_grid(tf.round(tf.clip_by_value(y, 0.0, 1.0) * 255.0), b)

    energy = tf.nn.conv2d(x * x, c["ones"], b, "VALID")  # ‖P‖², an exact integer
    nonzero = tf.minimum(energy, 1.0)
    # Scale times a non-constant factor: never folded into the exact integer kernels.
    m = tf.nn.conv2d(x, c["moments"], b, "VALID") * (
        c["scale"] * tf.math.rsqrt(tf.maximum(energy, 1.0)))
    ssm = tf.reduce_sum(m * m, -1, keepdims=True)
    textured = _step(ssm - _SSM_THRESHOLD)

    abs_m = tf.abs(m)
    d = tf.reduce_sum(abs_m, -1, keepdims=True) + _C
    q_v = tf.minimum(tf.reduce_sum(abs_m * c["last_row"], -1, keepdims=True) / d, _MAX_Q)
    q_h = tf.minimum(tf.reduce_sum(abs_m * c["last_col"], -1, keepdims=True) / d, _MAX_Q)
    blockiness = tf.math.log(1.0 - (q_v + q_h) / 2.0) / math.log(1.0 - _MAX_Q)
    blockiness = nonzero * blockiness + (1.0 - nonzero)  # all-zero patch scores 1

    raw_b = tf.nn.conv2d(x, c["blurred"], b, "VALID")
    m_b = raw_b * c["dc_mask"] * tf.math.rsqrt(
        tf.maximum(tf.reduce_sum(raw_b * raw_b, -1, keepdims=True), 1e-6))
    sim = tf.reduce_mean((2.0 * m * m_b + _C) / (m * m + m_b * m_b + _C), -1, keepdims=True)
    return blockiness, textured, tf.maximum(1.0 - sim, 0.0)
