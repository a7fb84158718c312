"""How much of a codec's error any linear filter could remove: the oracle Wiener bound.

    python -m benchmarks.linear_headroom --data ../shared/data/val/classic5 --codec hevc \\
        [--levels 22,27,32,37,42] [--taps 7] [--json F]

Each image's Y plane is compressed at each level (``rbqe_tf.compression``), then the
least-squares K×K filter plus offset that maps that decoded image to its own ground
truth (fitted on the ground truth: an oracle no real filter beats) is applied, and the
output is rounded to 8 bits. The ΔPSNR it gains says how much of the codec's error is
linearly predictable from the decoded pixels; a codec whose in-loop filters (HEVC's
deblocking and SAO) already took that part leaves a trained network far less to do.
Prints, per level, the mean input PSNR and the mean oracle ΔPSNR.
"""
import argparse
import json

import numpy as np

from rbqe_tf import metrics
from rbqe_tf.compression import CodecError, compress
from rbqe_tf.evaluation_data import DataError, parse_levels
from rbqe_tf.image_io import ImageError
from rbqe_tf.levels import DEFAULT_LEVELS
from rbqe_tf.sources import reference_images


def neighbourhoods(image, taps):
    """(H·W, taps² + 1) matrix: each pixel's taps×taps window (mirror-padded) and a 1."""
    r = taps // 2
    padded = np.pad(image.astype(np.float64), r, mode="reflect")
    h, w = image.shape
    columns = [padded[i:i + h, j:j + w].ravel() for i in range(taps) for j in range(taps)]
    return np.stack(columns + [np.ones(h * w)], axis=1)


def oracle_filter(decoded, ground_truth, taps=7):
    """8-bit output of the least-squares taps×taps filter + offset fitted to ``ground_truth``."""
    x = neighbourhoods(decoded, taps)
    residual = ground_truth.astype(np.float64).ravel() - decoded.astype(np.float64).ravel()
    weights = np.linalg.solve(x.T @ x + 1e-9 * np.eye(x.shape[1]), x.T @ residual)
    out = decoded + (x @ weights).reshape(decoded.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def headroom(planes, codec, levels, taps):
    """{level: {'input_psnr', 'oracle_delta_psnr'}} as means over ``planes``."""
    rows = {}
    for level in levels:
        before, gain = [], []
        for gt in planes:
            decoded, _ = compress(codec, gt, level)
            p0 = metrics.psnr(decoded, gt)
            before.append(p0)
            gain.append(metrics.psnr(oracle_filter(decoded, gt, taps), gt) - p0)
        rows[level] = {"input_psnr": float(np.mean(before)),
                       "oracle_delta_psnr": float(np.mean(gain))}
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.linear_headroom",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of lossless ground-truth PNGs")
    p.add_argument("--codec", choices=("jpeg", "hevc"), default="jpeg")
    p.add_argument("--levels", help="comma-separated QFs or QPs (default: the codec's five)")
    p.add_argument("--taps", type=int, default=7, help="filter size (odd)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.taps < 1 or args.taps % 2 == 0:
        p.error(f"--taps must be a positive odd number, got {args.taps}")
    try:
        levels = (parse_levels(args.codec, args.levels.split(",")) if args.levels
                  else list(DEFAULT_LEVELS[args.codec]))
        planes = list(reference_images(args.data).values())
        if not planes:
            p.error(f"{args.data}: no PNG images")
        rows = headroom(planes, args.codec, levels, args.taps)
    except (OSError, ImageError, DataError, CodecError) as e:
        p.error(str(e))
    print(f"{args.codec}, {len(planes)} image(s), oracle {args.taps}×{args.taps} linear filter")
    print("level  input PSNR  oracle ΔPSNR")
    for level, row in rows.items():
        print(f"{level:>5}  {row['input_psnr']:10.3f}  {row['oracle_delta_psnr']:+12.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"codec": args.codec, "images": len(planes), "taps": args.taps,
                       "levels": {str(k): v for k, v in rows.items()}}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
