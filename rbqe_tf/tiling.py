"""Overlapping tiles, which tile owns what, and early exit over tiles (NumPy only).

An axis of ``size`` pixels is mirror-padded at its end to ``padded`` and covered by
tiles of ``length`` pixels at ``origins`` (a step of ``tile − 2·overlap``). Each tile
owns an interval of the padded axis — its output there goes into the stitched image
— cut halfway through each overlap; the owned intervals partition the axis (hard
seams, no blending). Origins are multiples of the step, so with an overlap that is
a multiple of the score's block size every tile's score-patch grid lies on the
image's own grid.

:func:`early_exit` is the decision rule shared by the Keras ``Enhancer`` and the
LiteRT ``Runner``; see its docstring.
"""
import dataclasses
import math

import numpy as np

from rbqe_tf.score_pooling import patch_sums, score_from_sums


@dataclasses.dataclass(frozen=True)
class Axis:
    size: int
    padded: int
    length: int  # of every tile along this axis
    origins: tuple
    owned: tuple  # ((start, end), …) per tile, in padded coordinates


def layout(size, tile, overlap, multiple=None):
    """The :class:`Axis` of ``size`` pixels for ``tile``-pixel tiles overlapping by 2·overlap.

    A size ≤ ``tile`` is one tile, padded to ``tile`` or, given ``multiple``, only
    to the next multiple of it (models with a dynamic input size).
    """
    if size <= tile:
        padded = tile if multiple is None else max(1, math.ceil(size / multiple)) * multiple
        return Axis(size, padded, padded, (0,), ((0, padded),))
    step = tile - 2 * overlap
    n = 1 + math.ceil((size - tile) / step)
    origins = tuple(i * step for i in range(n))
    bounds = [0] + [o + overlap for o in origins[1:]] + [(n - 1) * step + tile]
    return Axis(size, bounds[-1], tile, origins, tuple(zip(bounds[:-1], bounds[1:])))


def owned_patches(axis, i, block):
    """Tile-local index range [lo, hi) of the score patches tile ``i`` owns.

    The image has patches p = 0 … size//block − 2 (docs/method.md, "Quality score",
    step 2: patch p spans
    p·B + B/2 … p·B + 3B/2 − 1, so only patches inside the unpadded image count);
    a patch belongs to the tile owning its centre row/column p·B + B.
    """
    start, end = axis.owned[i]
    lo = max(0, -(-(start - block) // block))
    hi = max(lo, min(axis.size // block - 1, -(-(end - block) // block)))
    first = axis.origins[i] // block
    return lo - first, hi - first


def pad_bottom_right(y, height, width):
    """``y`` [H, W] mirror-padded (symmetric) at its bottom and right to height × width: the
    codec's block grid stays at the origin, and every forward pass (enhancer, runner,
    evaluator, training validation) pads this way."""
    h, w = y.shape
    return np.pad(y, ((0, height - h), (0, width - w)), "symmetric")


def pad_to_multiple(y, multiple):
    """``y`` [H, W] padded (:func:`pad_bottom_right`) to multiples of ``multiple``."""
    h, w = y.shape
    return pad_bottom_right(y, h + -h % multiple, w + -w % multiple)


class NonFiniteOutput(ValueError):
    """The network's output holds NaN or ±inf: refused, never stored as black pixels."""


def early_exit(y, rows, cols, stages, maps, block, threshold, num_exits, exit=None,
               per_tile=False, keep=1):
    """Enhances Y plane ``y`` [H, W] tile by tile → (Y out [H, W] float32, exits, scores).

    ``stages(tile)`` runs the network on a float32 [rows.length, cols.length] tile
    and yields its exits 1, 2, … as arrays of that shape, keeping its features
    while paused; ``maps(exit_tile)`` gives the tile's per-patch score maps
    [length/B − 1, length/B − 1, 3] (docs/method.md, "Quality score", before pooling).

    Decision (``exit`` None): a *group* of tiles — the whole image, or each tile
    with ``per_tile`` — is run exit by exit. After exit k < ``num_exits`` every tile
    of the group has written the region it owns into the output, and the score
    pools the patch maps of the patches each tile owns (those inside the image):
    the score of the stitched exit-k image except for patches straddling a seam
    (exactly it for a one-tile image). The group stops at the first k whose score
    ≥ ``threshold``, else at the last exit. ``exit`` forces one exit for every tile.

    Memory: at most ``keep`` (≥ 1) tiles keep their features between exits; the
    others are re-run from the first stage at the next exit. The result does not
    depend on ``keep``; only the time does. Returns one exit and one score list per
    group; NonFiniteOutput if an exit taken holds NaN or ±inf.
    """
    h, w = y.shape
    padded = pad_bottom_right(np.asarray(y, np.float32), rows.padded, cols.padded)
    out = np.empty_like(padded)
    tiles = [(i, j) for i in range(len(rows.origins)) for j in range(len(cols.origins))]
    groups = [[t] for t in tiles] if per_tile else [tiles]
    exits, all_scores = [], []
    for group in groups:
        live, scores = {}, []
        for k in [exit] if exit else range(1, num_exits + 1):
            check = exit is None and k < num_exits
            sums = np.zeros(4)
            for i, j in group:
                r, c = rows.origins[i], cols.origins[j]
                run, done = live.pop((i, j), (None, 0))
                if run is None:
                    run = stages(padded[r:r + rows.length, c:c + cols.length])
                for _ in range(k - done):
                    value = next(run)
                (r0, r1), (c0, c1) = rows.owned[i], cols.owned[j]
                out[r0:r1, c0:c1] = value[r0 - r:r1 - r, c0 - c:c1 - c]
                if check:
                    (p0, p1), (q0, q1) = (owned_patches(rows, i, block),
                                          owned_patches(cols, j, block))
                    sums += patch_sums(maps(value)[p0:p1, q0:q1])
                    if len(live) < max(keep, 1):
                        live[(i, j)] = (run, k)
            if check:
                scores.append(score_from_sums(sums))
                if scores[-1] >= threshold:
                    break
        for i, j in group:
            (r0, r1), (c0, c1) = rows.owned[i], cols.owned[j]
            if not np.isfinite(out[r0:r1, c0:c1]).all():
                raise NonFiniteOutput(f"exit {k} produced NaN or infinite values "
                                      "(a damaged model or export?); nothing written")
        exits.append(k)
        all_scores.append(scores)
    return out[:h, :w], exits, all_scores
