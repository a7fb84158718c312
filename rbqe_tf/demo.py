"""Before/after demonstration on lossless photos shipped in the package.

Each reference photo in ``rbqe_tf/samples`` (CC0 photos from scikit-image) is
compressed on the fly at the demo levels of each codec (JPEG: QF 10 … 90 and the
uncompressed photo, so the table shows what happens to light inputs too), enhanced
with a shipped model and its decision, and reported as one row: level, exit taken
(0: left as it was), the decision's numbers (predicted ΔPSNR per exit, or quality
scores), PSNR in → out on Y, milliseconds. Like the evaluation protocol, the codecs see the
BT.601 Y plane (gray), and the PSNR is on 8-bit Y without border crop.
"""
import dataclasses
import math
import os

import numpy as np

from rbqe_tf import metrics
from rbqe_tf.image_io import write_image
from rbqe_tf.levels import DEFAULT_LEVELS, UNCOMPRESSED, level_name
from rbqe_tf.sources import reference_images

DEMO_LEVELS = {"jpeg": (10, 30, 50, 70, 90, UNCOMPRESSED), "hevc": DEFAULT_LEVELS["hevc"]}


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
    gains: list = dataclasses.field(default_factory=list)  # predicted ΔPSNR per exit


def warm_up(enhancer, y):
    """Traces every stage and the score at this image size, so timings exclude tracing."""
    enhancer(y, exit=enhancer.num_exits)
    enhancer.enhance_y(np.asarray(y, np.float64) / 255.0, exit=None)


def run(enhancers, out_dir=None, overwrite=False, exit=None, compress=None,
        progress=print):
    """Rows for every reference photo × codec (``enhancers``: codec → Enhancer) × level.

    ``out_dir``: where the compressed inputs and enhanced outputs go as PNGs
    (``<image>_<codec><level>_in.png`` / ``_out.png``); ``exit``: force this exit;
    ``compress``: the codec function (default :func:`rbqe_tf.evaluation_data.make_input`).
    """
    if compress is None:
        from rbqe_tf.evaluation_data import make_input as compress
    rows = []
    for name, gt in reference_images().items():
        for codec, enhancer in enhancers.items():
            warm_up(enhancer, gt)
            for level in DEMO_LEVELS[codec]:
                compressed = compress(codec, gt, level)
                result = enhancer(compressed, exit)
                rows.append(DemoRow(name, codec, level, result.exit, result.scores,
                                    metrics.psnr(gt, compressed),
                                    metrics.psnr(gt, result.image), result.ms, result.gains))
                progress(format_row(rows[-1]))
                if out_dir:
                    stem = os.path.join(out_dir, f"{name}_{codec}{level_name(level)}")
                    write_image(stem + "_in.png", compressed, overwrite)
                    write_image(stem + "_out.png", result.image, overwrite)
    return rows


HEADER = f"{'image':10s} {'codec':5s} {'level':>5s} {'exit':>4s}  {'decision':30s} " \
         f"{'PSNR in → out (gain)':>26s} {'ms':>7s}"


def format_row(row):
    scores = (" ".join(f"{g:+.2f}" for g in row.gains) if row.gains
              else " ".join(f"{s:.2f}" for s in row.scores) or "-")
    gain = row.psnr_out - row.psnr_in
    psnr_in = "    inf" if math.isinf(row.psnr_in) else f"{row.psnr_in:7.2f}"
    psnr_out = "   inf" if math.isinf(row.psnr_out) else f"{row.psnr_out:6.2f}"
    gain = "(+0.00 dB)" if math.isnan(gain) else f"({gain:+.2f} dB)"
    return (f"{row.image:10s} {row.codec:5s} {level_name(row.level):>5s} {row.exit:4d}  "
            f"{scores:30s} {psnr_in} → {psnr_out} {gain} {row.ms:7.0f}")


def summary(rows):
    """One line per codec: mean and worst gain over the compressed inputs, mean exit, and
    how many uncompressed inputs came back unchanged (their PSNR is infinite)."""
    lines = []
    for codec in dict.fromkeys(r.codec for r in rows):
        sel = [r for r in rows if r.codec == codec and not math.isinf(r.psnr_in)]
        raw = [r for r in rows if r.codec == codec and math.isinf(r.psnr_in)]
        gains = [r.psnr_out - r.psnr_in for r in sel]
        line = (f"{codec}: mean gain {np.mean(gains):+.2f} dB (worst {min(gains):+.2f}) over "
                f"{len(sel)} compressed images, mean exit {np.mean([r.exit for r in sel]):.2f}")
        if raw:
            kept = sum(math.isinf(r.psnr_out) for r in raw)
            line += f"; uncompressed: {kept} of {len(raw)} returned unchanged"
        lines.append(line)
    return lines
