"""Before/after demonstration on lossless photos shipped in the package.

Each reference photo in ``rbqe_tf/samples`` (CC0 photos from scikit-image) is
compressed on the fly at every level of each codec with a shipped model, enhanced
with early exit, and reported as one row: level, exit taken, quality scores,
PSNR in → out on Y, milliseconds. Like the evaluation protocol, the codecs see the
BT.601 Y plane (gray), and the PSNR is on 8-bit Y without border crop.
"""
import dataclasses
import os

import numpy as np

from rbqe_tf import color, metrics
from rbqe_tf.image_io import read_image, write_image
from rbqe_tf.levels import DEFAULT_LEVELS

SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


@dataclasses.dataclass
class DemoRow:
    """One compressed photo and what early-exit enhancement made of it."""

    image: str
    codec: str
    level: int
    exit: int
    scores: list
    psnr_in: float
    psnr_out: float
    ms: float


def reference_images(folder=SAMPLES_DIR):
    """name → 8-bit Y plane of each lossless photo in ``folder``, sorted by name."""
    planes = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".png"):
            image = read_image(os.path.join(folder, name))
            planes[name[:-4]] = image if image.ndim == 2 else color.rgb_to_y_uint8(image[..., :3])
    return planes


def warm_up(enhancer, y):
    """Traces every stage and the score at this image size, so timings exclude tracing."""
    enhancer(y, exit=enhancer.num_exits)
    enhancer.enhance_y(np.asarray(y, np.float64) / 255.0, exit=None)


def run(enhancers, out_dir=None, overwrite=False, exit=None, compress=None,
        progress=print):
    """Rows for every reference photo × codec (``enhancers``: codec → Enhancer) × level.

    ``out_dir``: where the compressed inputs and enhanced outputs go as PNGs
    (``<image>_<codec><level>_in.png`` / ``_out.png``); ``exit``: force this exit;
    ``compress``: the codec function (default ``datasets.codecs.compress``).
    """
    if compress is None:
        from datasets.codecs import compress
    rows = []
    for name, gt in reference_images().items():
        for codec, enhancer in enhancers.items():
            warm_up(enhancer, gt)
            for level in DEFAULT_LEVELS[codec]:
                compressed, _ = compress(codec, gt, level)
                result = enhancer(compressed, exit)
                rows.append(DemoRow(name, codec, level, result.exit, result.scores,
                                    metrics.psnr(gt, compressed),
                                    metrics.psnr(gt, result.image), result.ms))
                progress(format_row(rows[-1]))
                if out_dir:
                    stem = os.path.join(out_dir, f"{name}_{codec}{level}")
                    write_image(stem + "_in.png", compressed, overwrite)
                    write_image(stem + "_out.png", result.image, overwrite)
    return rows


HEADER = f"{'image':10s} {'codec':5s} {'level':>5s} {'exit':>4s}  {'scores':24s} " \
         f"{'PSNR in → out (gain)':>26s} {'ms':>7s}"


def format_row(row):
    scores = " ".join(f"{s:.2f}" for s in row.scores) or "-"
    gain = row.psnr_out - row.psnr_in
    return (f"{row.image:10s} {row.codec:5s} {row.level:5d} {row.exit:4d}  {scores:24s} "
            f"{row.psnr_in:7.2f} → {row.psnr_out:6.2f} ({gain:+.2f} dB) {row.ms:7.0f}")


def summary(rows):
    """One line per codec: mean gain, worst gain, mean exit."""
    lines = []
    for codec in dict.fromkeys(r.codec for r in rows):
        sel = [r for r in rows if r.codec == codec]
        gains = [r.psnr_out - r.psnr_in for r in sel]
        lines.append(f"{codec}: mean gain {np.mean(gains):+.2f} dB (worst {min(gains):+.2f}) "
                     f"over {len(sel)} images, mean exit {np.mean([r.exit for r in sel]):.2f}")
    return lines
