"""Early-exit enhancement of images (the API behind ``python -m rbqe_tf.enhance``).

Two decisions, per image (docs/decision.md):

- ``"gain"`` (the default where the weights have a gain predictor beside them): before
  any stage, :mod:`rbqe_tf.gain` predicts each exit's ΔPSNR from a cheap look at the
  input; **exit 0** returns the image unchanged when no exit is predicted to gain the
  calibrated margin, else the cheapest exit within the calibrated tolerance of the best
  predicted one runs. Light inputs (JPEG QF ≥ 90, uncompressed) cost the look alone.
- ``"score"`` (the paper's): stages run in order; after exits 1..4 the output's Y,
  rounded to 8 bits, gets the blind quality score, and the first exit scoring ≥ the
  threshold is returned (else exit 5).

Colour images are enhanced on BT.601 Y with chroma and alpha kept; 8- and 16-bit
samples are kept; an image left at exit 0 is returned as it came.

Large images are processed in overlapping tiles (bounded memory, the rule of the
TFLite runner's default ``decision="image"``, :func:`rbqe_tf.tiling.early_exit`): a
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

from rbqe_tf import color, iqa, tiling
from rbqe_tf.calibration import DEFAULT_GAIN_RULE, resolve_gain_rule, resolve_threshold
from rbqe_tf.gain import decide, load_predictor
from rbqe_tf.levels import BLOCK_SIZE, check_codec
from rbqe_tf.model import default_weights, iterate_stages, load_model

DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
DEFAULT_CACHE_MB = 512  # 2 tiles of 512² at features=32 (≈ 209 MB each)
DECISIONS = ("gain", "score")
CHANNEL_ORDERS = ("rgb", "bgr")


@dataclasses.dataclass
class EnhanceResult:
    """An enhanced image with the exit taken (0: left as it was), the quality scores
    checked (score decision), the predicted ΔPSNR per exit (gain decision), the time."""

    image: np.ndarray
    exit: int
    scores: list
    ms: float
    gains: list = dataclasses.field(default_factory=list)


class Enhancer:
    """Runs a model's stages with early exit; build once, call per image."""

    def __init__(self, model, codec="jpeg", threshold=None, tile=DEFAULT_TILE,
                 overlap=DEFAULT_OVERLAP, cache_mb=DEFAULT_CACHE_MB, decision=None,
                 predictor=None, gain_rule=None):
        """``predictor``: a :class:`rbqe_tf.gain.GainPredictor`; ``gain_rule``:
        ``{"margin": dB, "tolerance": dB}`` (calibrated, :func:`resolve_gain_rule`);
        ``decision``: "gain" or "score" (default: "gain" when a predictor is given).
        A model read by :func:`rbqe_tf.model.load_model` brings what is calibrated beside
        its file (threshold, predictor, rule) for whatever is not given here, so
        ``Enhancer(load_model(path))`` decides as ``python -m rbqe_tf.enhance`` does."""
        self.codec = check_codec(codec)
        source = getattr(model, "source_path", None)
        if source is not None:
            threshold = resolve_threshold(codec, source, threshold)[0]
            if predictor is None and decision != "score":
                predictor = load_predictor(source)
            gain_rule = gain_rule or resolve_gain_rule(codec, source)[0]
        self.threshold = iqa.DEFAULT_THRESHOLDS[codec] if threshold is None else threshold
        self.decision = decision or ("gain" if predictor is not None else "score")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, "
                             f"got {self.decision!r}")
        if self.decision == "gain" and predictor is None:
            raise ValueError("the gain decision needs a gain predictor (<weights>.gain.npz, "
                             "python -m rbqe_tf.gain_fit)")
        self.predictor = predictor
        self.gain_rule = gain_rule or dict(DEFAULT_GAIN_RULE)
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

    @classmethod
    def from_weights(cls, weights=None, codec="jpeg", threshold=None, decision=None,
                     **tiling_options):
        """An Enhancer for a ``.keras`` file (default: the model shipped for ``codec``)
        with what is calibrated beside it: threshold, gain predictor and rule."""
        return cls(load_model(weights or default_weights(codec)), codec, threshold,
                   decision=decision, **tiling_options)

    def __call__(self, image, exit=None, channel_order="rgb"):
        """Enhances an image array (gray, RGB or RGBA; uint8, uint16 or float in [0, 1]).

        ``exit``: force one (0 = leave the image as it is); ``channel_order``: "rgb", or
        "bgr" for OpenCV arrays (the result comes back in the same order)."""
        if exit is not None and not 0 <= exit <= self.num_exits:
            raise ValueError(f"exit must be in 0..{self.num_exits}, got {exit}")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        start = time.perf_counter()
        bgr = channel_order == "bgr" and np.ndim(image) == 3 and np.shape(image)[2] in (3, 4)
        if bgr:
            image = _swap_red_blue(image)
        gains = []
        if exit is None and self.decision == "gain":
            exit, gains = decide(self.predictor, self.gain_rule, image)
        if exit == 0:
            out, k, scores = color.unchanged(image), 0, []
        else:
            out, k, scores = color.enhance_through_y(image, lambda y: self.enhance_y(y, exit))
        if bgr:
            out = _swap_red_blue(out)
        return EnhanceResult(out, k, scores, (time.perf_counter() - start) * 1e3, gains)


def _swap_red_blue(image):
    image = np.asarray(image)
    return np.concatenate([image[..., 2::-1], image[..., 3:]], -1)


def enhance(image, model=None, codec="jpeg", threshold=None, exit=None, decision=None,
            channel_order="rgb", **tiling_options):
    """Enhances ``image`` (an array, RGB by default) with the shipped model for ``codec``.

    ``model``: another ``.keras`` path (its calibration beside it is used) or a built
    RBQE model (score decision at ``threshold``, else the paper's). ``tiling_options``:
    ``tile``, ``overlap``, ``cache_mb`` of :class:`Enhancer`. Returns an
    :class:`EnhanceResult`. For many images build an :class:`Enhancer` once
    (:meth:`Enhancer.from_weights`).
    """
    if model is None or isinstance(model, (str, os.PathLike)):
        enhancer = Enhancer.from_weights(model, codec, threshold, decision, **tiling_options)
    else:
        enhancer = Enhancer(model, codec, threshold, decision=decision, **tiling_options)
    return enhancer(image, exit, channel_order)
