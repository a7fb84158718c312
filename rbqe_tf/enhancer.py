"""Early-exit enhancement of images (the API behind ``python -m rbqe_tf.enhance``).

Stages run in order; after exits 1..4 the output's Y, rounded to 8 bits, gets the
blind quality score, and the first exit scoring ≥ the threshold is returned (else
exit 5). The decision is per image. Colour images are enhanced on BT.601 Y with
chroma and alpha kept; 8- and 16-bit samples are kept.

Large images are processed in overlapping tiles (bounded memory, the rule of the
TFLite runner's default ``decision="image"``, :func:`export.tiling.early_exit`): a
side ≤ ``tile`` is one tile, mirror-padded (symmetric) only to a multiple of 32, so
an image of at most ``tile``×``tile`` pixels runs in one piece exactly as an untiled
network would. A longer side is cut into ``tile``-pixel tiles overlapping by
2·``overlap``, stitched with hard seams in the middle of each overlap. After exit k
the score pools the per-patch maps of the patches each tile owns: the score of the
stitched exit-k image except for the patches that straddle a seam. Tiles keep their
features between exits while they fit in ``cache_mb`` (default 512 MB: two 512² tiles
of ``rbqe``); the others are re-run from stage 1 at the next exit, so memory is
bounded at any image size (one tile's activations, the cache, and a few float32
planes of the image) and only the time grows. Tiled and untiled outputs differ slightly everywhere because each tile's ECA
pools its own channel statistics (docs/export.md).
"""
import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from export import tiling
from rbqe_tf import color, iqa
from rbqe_tf.calibration import resolve_threshold
from rbqe_tf.levels import BLOCK_SIZE, check_codec
from rbqe_tf.model import iterate_stages, load_model

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
DEFAULT_CACHE_MB = 512  # 2 tiles of 512² at features=32 (≈ 209 MB each)


@dataclasses.dataclass
class EnhanceResult:
    """An enhanced image with the exit taken, the scores checked, and the time."""

    image: np.ndarray
    exit: int
    scores: list
    ms: float


class Enhancer:
    """Runs a model's stages with early exit; build once, call per image."""

    def __init__(self, model, codec="jpeg", threshold=None, tile=DEFAULT_TILE,
                 overlap=DEFAULT_OVERLAP, cache_mb=DEFAULT_CACHE_MB):
        self.codec = check_codec(codec)
        self.threshold = iqa.DEFAULT_THRESHOLDS[codec] if threshold is None else threshold
        self.multiple = model.rbqe_config.size_multiple
        self.num_exits = model.rbqe_config.num_exits
        if tile % self.multiple or tile < self.multiple:
            raise ValueError(f"tile must be a positive multiple of {self.multiple}, got {tile}")
        if overlap % 8 or not 0 <= overlap < tile // 2:
            raise ValueError(f"overlap must be a multiple of 8 in 0..{tile // 2 - 1}, "
                             f"got {overlap}")
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        self.tile, self.overlap = tile, overlap
        cfg = model.rbqe_config
        keys = model.stage_input_keys(self.num_exits)
        tile_bytes = 4 * cfg.features * sum((tile >> i) ** 2 for i, _ in keys)
        self.keep = int(cache_mb * 2 ** 20 // tile_bytes)
        self._maps = tf.function(lambda y: iqa.patch_maps(y, codec), reduce_retracing=True)
        self._stages = [tf.function(s, reduce_retracing=True) for s in model.stage_models()]

    def _run(self, exit):
        def run(tile):
            for out in iterate_stages(self._stages[:exit], tile[None, :, :, None]):
                yield out.numpy()[0, :, :, 0]
        return run

    def enhance_y(self, y, exit=None):
        """Enhances one Y plane [H, W] float in [0, 1] → (Y out, exit, scores)."""
        rows, cols = (tiling.layout(n, self.tile, self.overlap, self.multiple)
                      for n in np.shape(y))
        out, exits, scores = tiling.early_exit(
            y, rows, cols, self._run(exit), lambda t: self._maps(t[None, :, :, None])[0].numpy(),
            BLOCK_SIZE[self.codec], self.threshold, self.num_exits, exit, keep=self.keep)
        return np.clip(out, 0.0, 1.0, out=out), exits[0], scores[0]

    def __call__(self, image, exit=None):
        """Enhances an image array (gray, RGB or RGBA; uint8, uint16 or float in [0, 1])."""
        if exit is not None and not 1 <= exit <= self.num_exits:
            raise ValueError(f"exit must be in 1..{self.num_exits}, got {exit}")
        start = time.perf_counter()
        out, k, scores = color.enhance_through_y(image, lambda y: self.enhance_y(y, exit))
        return EnhanceResult(out, k, scores, (time.perf_counter() - start) * 1e3)


def enhance(image, model, codec="jpeg", threshold=None, exit=None, **tiling_options):
    """Enhances ``image`` with ``model`` (an RBQE model or a ``.keras`` path).

    The threshold defaults to the one calibrated beside a ``.keras`` path, else the
    paper's. ``tiling_options``: ``tile``, ``overlap``, ``cache_mb`` of
    :class:`Enhancer`. Returns an :class:`EnhanceResult`. For many images build an
    :class:`Enhancer` once.
    """
    if isinstance(model, (str, os.PathLike)):
        threshold, _ = resolve_threshold(codec, model, threshold)
        model = load_model(model)
    return Enhancer(model, codec, threshold, **tiling_options)(image, exit)
