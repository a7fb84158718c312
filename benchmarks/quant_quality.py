"""ΔPSNR per exit and level: the float Keras model against TFLite exports of it.

    python -m benchmarks.quant_quality --weights rbqe_tf/weights/rbqe_jpeg.keras \\
        --exports ptq=tflite_int8,qat=tflite_qat --data ../shared/data/val/classic5 [--json F]

Every PNG's Y plane is JPEG-compressed (OpenCV) at each level, its top-left tile (the
exports' tile size; smaller images are mirror-padded) goes through the float model
and each export's ``exit_k`` files, and PSNR against the ground truth is taken on the
tile's image part, rounded to 8 bits. Prints, per export, the ΔPSNR each exit loses
against float (positive = worse), per level and over all.
"""
import argparse
import json

import numpy as np

from rbqe_tf import metrics
from rbqe_tf.compression import compress_jpeg
from rbqe_tf.levels import DEFAULT_LEVELS
from rbqe_tf.litert.interpreter import Value, open_model
from rbqe_tf.litert.manifest import read_manifest
from rbqe_tf.sources import reference_images


def tiles(folder, tile):
    """(name, ground-truth Y tile, rows, cols) of each PNG: the top-left tile×tile part."""
    for name, gt in reference_images(folder).items():
        h, w = min(tile, gt.shape[0]), min(tile, gt.shape[1])
        yield name, gt[:h, :w], h, w


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.quant_quality",
                                description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--exports", required=True, help="label=folder,… (same tile size)")
    p.add_argument("--data", required=True, help="folder of lossless ground-truth images")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from rbqe_tf.cli import import_tensorflow_quietly
    import_tensorflow_quietly()
    from rbqe_tf.model import load_model
    model = load_model(args.weights)
    exports = dict(item.split("=", 1) for item in args.exports.split(","))
    manifests = {label: read_manifest(f) for label, f in exports.items()}
    tile_sizes = {m["tile"] for m in manifests.values()}
    if len(tile_sizes) != 1:
        p.error(f"--exports have different tile sizes ({sorted(tile_sizes)})")
    tile = tile_sizes.pop()
    k_max = model.rbqe_config.num_exits
    runners = {label: [open_model(exports[label], m, f"exit_{k}", 2) for k in range(1, k_max + 1)]
               for label, m in manifests.items()}
    psnr = {}  # (label, level, exit) → list of PSNRs
    for name, gt, h, w in tiles(args.data, tile):
        for level in DEFAULT_LEVELS["jpeg"]:
            compressed, _ = compress_jpeg(gt, level)
            y = np.pad(compressed / 255.0, ((0, tile - h), (0, tile - w)), "symmetric")
            y = y[None, :, :, None].astype(np.float32)
            outputs = {"float": [np.asarray(o)[0, :h, :w, 0] for o in model(y)]}
            for label, exits in runners.items():
                outputs[label] = [next(iter(m.run({"y": Value(y)}).values())).float()[0, :h, :w, 0]
                                  for m in exits]
            for label, outs in outputs.items():
                for k, out in enumerate(outs, 1):
                    out8 = np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
                    psnr.setdefault((label, level, k), []).append(metrics.psnr(gt, out8))
        print(f"{name} done", flush=True)
    report = {}
    for label in runners:
        rows = {}
        for level in [*DEFAULT_LEVELS["jpeg"], "all"]:
            levels = DEFAULT_LEVELS["jpeg"] if level == "all" else [level]
            rows[str(level)] = [float(np.mean([np.mean(psnr["float", lv, k])
                                               - np.mean(psnr[label, lv, k]) for lv in levels]))
                                for k in range(1, k_max + 1)]
        report[label] = rows
        print(f"{label}: ΔPSNR lost vs float (dB) per exit 1..{k_max}")
        for level, lost in rows.items():
            print(f"  QF {level:>3}: " + " ".join(f"{x:+.3f}" for x in lost))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tile": tile, "weights": args.weights, "exports": exports,
                       "lost_db": report}, f, indent=2)


if __name__ == "__main__":
    main()
