"""The quality score Q from per-patch maps (NumPy only; docs/method.md, "Quality score",
steps 6–8).

A score model (``score_<codec>.tflite``) gives, per patch, its blockiness, whether it
is textured, and its blur score. Q pools them over a chosen set of patches: the mean
blockiness of the smooth patches and the mean blur of the textured ones (1.0 for an
empty set), combined as ``min(S_blk^0.9 · S_blur^0.1, 1)``. Sums pool across tiles.
"""
import numpy as np

_W_BLOCK, _W_BLUR = 0.9, 0.1


def patch_sums(maps):
    """[..., 3] patch maps → [4] sums: smooth blockiness, #smooth, textured blur, #textured."""
    maps = np.asarray(maps, np.float64).reshape(-1, 3)
    blockiness, textured, blur = maps[:, 0], maps[:, 1], maps[:, 2]
    smooth = 1.0 - textured
    return np.array([(blockiness * smooth).sum(), smooth.sum(),
                     (blur * textured).sum(), textured.sum()])


def score_from_sums(sums):
    """Q in [0, 1] from (possibly accumulated) :func:`patch_sums`."""
    blk_sum, n_smooth, blur_sum, n_textured = sums
    s_blk = blk_sum / n_smooth if n_smooth > 0 else 1.0
    s_blur = blur_sum / n_textured if n_textured > 0 else 1.0
    return float(min(s_blk ** _W_BLOCK * s_blur ** _W_BLUR, 1.0))
