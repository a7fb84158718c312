"""Do an export and the Keras model take the same exit? Per level, on validation images.

    python -m benchmarks.routing_agreement --models tflite_int8 \\
        --data ../shared/data/val/classic5 [--levels 10,...,100,none] [--json OUT]

Every image (its Y, compressed by ``rbqe_tf.evaluation_data``) goes through the Keras
``Enhancer`` (shipped weights and decision) and the export's ``Runner`` (its default
decision); prints per level the share of images taking the same exit (0–5) and the mean
ΔPSNR of both, and writes JSON. With the gain decision both decide from the same float
predictor before any stage, so they agree unless the inputs differ.
"""
import argparse
import json

import numpy as np

from rbqe_tf import metrics
from rbqe_tf.cli import import_tensorflow_quietly, native_stderr_muted
from rbqe_tf.evaluation_data import find_sources

DEFAULT_LEVELS = "10,20,30,40,50,60,70,80,90,95,100,none"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="export folder (python -m export.tflite)")
    p.add_argument("--data", required=True)
    p.add_argument("--levels", default=DEFAULT_LEVELS)
    p.add_argument("--json")
    a = p.parse_args(argv)
    levels, sources, _ = find_sources(a.data, "jpeg", a.levels.split(","))
    import_tensorflow_quietly()
    from rbqe_tf.litert.runner import Runner
    from rbqe_tf.enhancer import Enhancer
    with native_stderr_muted():  # LiteRT's XNNPACK line
        keras_path, runner = Enhancer.from_weights(), Runner(a.models)
    rows = []
    for source in sources:
        gt, decoded = source.load()
        for level, x in decoded.items():
            k, r = keras_path(x), runner(x)
            base = metrics.psnr(gt, x)
            gain = [0.0 if res.exit == 0 else metrics.psnr(gt, res.image) - base
                    for res in (k, r)]
            rows.append({"image": source.name, "level": level, "keras_exit": k.exit,
                         "export_exit": r.exit, "keras_gain": gain[0], "export_gain": gain[1]})
    print(f"{runner.decision} decision, export {runner.tile}² {a.models}")
    print(f"{'level':>5}  {'n':>3}  {'same exit':>9}  {'Keras ΔPSNR':>11}  {'export ΔPSNR':>12}")
    summary = {}
    for level in levels:
        sel = [r for r in rows if r["level"] == level]
        same = np.mean([r["keras_exit"] == r["export_exit"] for r in sel])
        kg, eg = (np.mean([r[key] for r in sel]) for key in ("keras_gain", "export_gain"))
        summary[str(level)] = {"n": len(sel), "same_exit": float(same),
                               "keras_delta_psnr": float(kg), "export_delta_psnr": float(eg)}
        print(f"{'none' if level == -1 else level!s:>5}  {len(sel):3d}  {same:9.2f}  "
              f"{kg:+11.3f}  {eg:+12.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"decision": runner.decision, "levels": summary, "rows": rows}, f,
                      indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
