"""Early-exit enhancement of images (the API behind ``python -m rbqe_tf.enhance``).

Stages run in order; after exits 1..4 the output's Y, rounded to 8 bits, gets the
blind quality score, and the first exit scoring ≥ the threshold is returned (else
exit 5). Colour images are enhanced on BT.601 Y with chroma and alpha kept;
8- and 16-bit samples are kept; any size is mirror-padded (symmetric) to a multiple of 32
and cropped back. The decision is per image (scores on the cropped output).
"""
import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from rbqe_tf import color, iqa
from rbqe_tf.calibration import resolve_threshold
from rbqe_tf.levels import check_codec
from rbqe_tf.model import iterate_stages, load_model


@dataclasses.dataclass
class EnhanceResult:
    """An enhanced image with the exit taken, the scores checked, and the time."""

    image: np.ndarray
    exit: int
    scores: list
    ms: float


class Enhancer:
    """Runs a model's stages with early exit; build once, call per image."""

    def __init__(self, model, codec="jpeg", threshold=None):
        self.codec = check_codec(codec)
        self.threshold = iqa.DEFAULT_THRESHOLDS[codec] if threshold is None else threshold
        self._score = tf.function(lambda y: iqa.quality_score(y, codec), reduce_retracing=True)
        self.multiple = model.rbqe_config.size_multiple
        self.num_exits = model.rbqe_config.num_exits
        self._stages = [tf.function(s, reduce_retracing=True) for s in model.stage_models()]

    def enhance_y(self, y, exit=None):
        """Enhances one Y plane [H, W] float in [0, 1] → (Y out, exit, scores)."""
        h, w = y.shape
        ph, pw = -h % self.multiple, -w % self.multiple
        padded = np.pad(y, ((0, ph), (0, pw)), mode="symmetric")[None, :, :, None]
        padded = tf.constant(padded, tf.float32)
        scores = []
        for k, out in enumerate(iterate_stages(self._stages[:exit], padded), 1):
            out = out[:, :h, :w, :]
            if exit is None and k < self.num_exits:
                scores.append(float(self._score(out)[0]))
                if scores[-1] >= self.threshold:
                    break
        return np.clip(out.numpy()[0, :, :, 0], 0.0, 1.0), k, scores

    def __call__(self, image, exit=None):
        """Enhances an image array (gray, RGB or RGBA; uint8, uint16 or float in [0, 1])."""
        if exit is not None and not 1 <= exit <= self.num_exits:
            raise ValueError(f"exit must be in 1..{self.num_exits}, got {exit}")
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"unsupported image shape {image.shape} "
                             "(expected gray, RGB or RGBA)")
        scale = _sample_scale(image.dtype)
        planes = image.astype(np.float64) / scale
        start = time.perf_counter()
        if image.ndim == 2:
            y_out, k, scores = self.enhance_y(planes, exit)
            out = y_out
        else:
            ycbcr = color.rgb_to_ycbcr(planes[:, :, :3])
            ycbcr[:, :, 0], k, scores = self.enhance_y(ycbcr[:, :, 0], exit)
            out = np.concatenate([color.ycbcr_to_rgb(ycbcr), planes[:, :, 3:]], axis=2)
        ms = (time.perf_counter() - start) * 1e3
        out = np.clip(out, 0.0, 1.0)
        if np.issubdtype(image.dtype, np.integer):
            out = np.round(out * scale).astype(image.dtype)
        else:
            out = out.astype(image.dtype)
        return EnhanceResult(out, k, scores, ms)


def _sample_scale(dtype):
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise ValueError(f"unsupported sample type {dtype} (need uint8, uint16 or float)")


def enhance(image, model, codec="jpeg", threshold=None, exit=None):
    """Enhances ``image`` with ``model`` (an RBQE model or a ``.keras`` path).

    The threshold defaults to the one calibrated beside a ``.keras`` path, else the
    paper's. Returns an :class:`EnhanceResult`. For many images build an
    :class:`Enhancer` once.
    """
    if isinstance(model, (str, os.PathLike)):
        threshold, _ = resolve_threshold(codec, model, threshold)
        model = load_model(model)
    return Enhancer(model, codec, threshold)(image, exit)
