"""Overlapping fixed-size tiles along one image axis, and which tile owns what.

An axis of ``size`` pixels is mirror-padded at its end to ``padded`` and covered by
tiles of ``tile`` pixels at ``origins`` (a step of ``tile − 2·overlap``). Each tile
owns an interval of the padded axis — its output there goes into the stitched image
— cut halfway through each overlap; the owned intervals partition the axis. Origins
are multiples of the step, so with an overlap that is a multiple of the score's
block size every tile's score-patch grid lies on the image's own grid.
"""
import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Axis:
    size: int
    padded: int
    origins: tuple
    owned: tuple  # ((start, end), …) per tile, in padded coordinates


def layout(size, tile, overlap):
    """The :class:`Axis` of ``size`` pixels for ``tile``-pixel tiles overlapping by 2·overlap."""
    if size <= tile:
        return Axis(size, tile, (0,), ((0, tile),))
    step = tile - 2 * overlap
    n = 1 + math.ceil((size - tile) / step)
    origins = tuple(i * step for i in range(n))
    bounds = [0] + [o + overlap for o in origins[1:]] + [(n - 1) * step + tile]
    return Axis(size, bounds[-1], origins, tuple(zip(bounds[:-1], bounds[1:])))


def owned_patches(axis, i, block):
    """Tile-local index range [lo, hi) of the score patches tile ``i`` owns.

    The image has patches p = 0 … size//block − 2 (DESIGN §3: patch p spans
    p·B + B/2 … p·B + 3B/2 − 1, so only patches inside the unpadded image count);
    a patch belongs to the tile owning its centre row/column p·B + B.
    """
    start, end = axis.owned[i]
    lo = max(0, -(-(start - block) // block))
    hi = max(lo, min(axis.size // block - 1, -(-(end - block) // block)))
    first = axis.origins[i] // block
    return lo - first, hi - first
