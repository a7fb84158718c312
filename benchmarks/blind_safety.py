"""What the main job does to a user's real files: colour photos saved as real JPEG files at
QF 10…100 and as uncompressed PNGs, run through ``python -m rbqe_tf.enhance`` as a user runs it.

    python -m benchmarks.blind_safety --data ../shared/data/val/set5,../shared/data/val/set14 \\
        [--levels 10,20,...,100,none] [--json blind_safety.json] [-- EXTRA CLI FLAGS]

Every RGB image of the folders is written by OpenCV as ``NAME_qQF.jpg`` (4:2:0, as cameras
and most web encoders do) and ``NAME_none.png``; one CLI run enhances the folder; each output
is compared with the original on BT.601 Y (PSNR, 8-bit, no border crop). Prints per level
the mean and worst ΔPSNR, how many images were left unchanged, and writes JSON. Ground
truths that were JPEG-coded before (``rbqe_tf.gain.jpeg_derived``) are reported apart at the
light levels (QF ≥ 70, none): against them, removing the old coding's artefacts counts as a loss.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from rbqe_tf import gain, metrics
from rbqe_tf.evaluation_data import DataError, parse_levels
from rbqe_tf.image_io import read_image
from rbqe_tf.levels import UNCOMPRESSED, is_light, level_name
from rbqe_tf.sources import list_sources, to_y

DEFAULT_LEVELS = "10,20,30,40,50,60,70,80,90,95,100,none"


def write_inputs(folders, levels, out):
    """Writes the JPEG/PNG inputs → {stem: (name, level, ground truth RGB)}."""
    made = {}
    for folder in folders:
        for path in list_sources(folder):
            rgb = read_image(path)
            if rgb.ndim != 3 or rgb.dtype != np.uint8:
                continue
            rgb = rgb[..., :3]
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            for level in levels:
                stem = f"{path.stem}_{'none' if level == UNCOMPRESSED else f'q{level}'}"
                if level == UNCOMPRESSED:
                    cv2.imwrite(os.path.join(out, stem + ".png"), bgr)
                else:
                    cv2.imwrite(os.path.join(out, stem + ".jpg"), bgr,
                                [cv2.IMWRITE_JPEG_QUALITY, level])
                made[stem] = (path.stem, level, rgb)
    return made


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="comma-separated folders of lossless images")
    p.add_argument("--levels", default=DEFAULT_LEVELS)
    p.add_argument("--json")
    p.add_argument("cli_flags", nargs="*", help="extra flags for rbqe_tf.enhance (after --)")
    a = p.parse_args(argv)
    try:
        levels = parse_levels("jpeg", a.levels.split(","))
    except DataError as e:
        sys.exit(f"error: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        os.makedirs(inputs)
        made = write_inputs(a.data.split(","), levels, inputs)
        if not made:
            sys.exit(f"error: no RGB images in {a.data}")
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "rbqe_tf.enhance", inputs, "--out", outputs,
                              *a.cli_flags], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            sys.exit(f"error: rbqe_tf.enhance failed: {run.stderr.strip().splitlines()[-1:]}")
        rows = []
        for stem, (name, level, rgb) in made.items():
            source = os.path.join(inputs, stem + (".png" if level == UNCOMPRESSED else ".jpg"))
            given, enhanced = read_image(source), read_image(os.path.join(outputs, stem + ".png"))
            gt_y = to_y(rgb)
            rows.append({"image": name, "level": level_name(level),
                         "psnr_in": min(metrics.psnr(gt_y, to_y(given)), 100.0),
                         "psnr_out": min(metrics.psnr(gt_y, to_y(enhanced)), 100.0),
                         "unchanged": bool(np.array_equal(given, enhanced)),
                         "gt_jpeg_derived": gain.jpeg_derived(gt_y)})
    print(f"{len(made)} files, one CLI run: {seconds:.0f} s "
          f"(flags: {' '.join(a.cli_flags) or 'defaults'})")
    print(f"{'level':>5}  {'n':>3}  {'mean ΔPSNR':>10}  {'worst':>7}  {'unchanged':>9}  "
          f"JPEG-derived ground truths (mean, worst)")
    summary = {}
    for level in levels:
        name = level_name(level)
        light = is_light(level, "jpeg")
        sel = [r for r in rows if r["level"] == name and not (light and r["gt_jpeg_derived"])]
        apart = [r for r in rows if r["level"] == name and light and r["gt_jpeg_derived"]]
        d = [r["psnr_out"] - r["psnr_in"] for r in sel]
        summary[str(name)] = {"n": len(sel), "mean_delta_psnr": float(np.mean(d)),
                              "worst_delta_psnr": float(np.min(d)),
                              "unchanged": sum(r["unchanged"] for r in sel)}
        extra = ""
        if apart:
            da = [r["psnr_out"] - r["psnr_in"] for r in apart]
            extra = f"{len(apart)}: {np.mean(da):+.3f} / {np.min(da):+.3f}"
        print(f"{name!s:>5}  {len(sel):3d}  {np.mean(d):+10.3f}  {np.min(d):+7.3f}  "
              f"{summary[str(name)]['unchanged']:9d}  {extra}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"levels": summary, "rows": rows, "seconds": seconds,
                       "cli_flags": a.cli_flags}, f, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
