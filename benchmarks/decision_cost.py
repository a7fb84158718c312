"""Cost of the gain decision (``rbqe_tf.gain.decide``, NumPy) with NumPy's BLAS on its
default thread count and on one thread (``rbqe_tf.gain.one_blas_thread``, what ``decide``
uses), interleaved in one run, beside the export's exit files for scale.

    python -m benchmarks.decision_cost --models runs/edge/int8_512 [--sizes 256,512] [--json OUT]

Random 8-bit gray images of each size; medians over ``--runs`` rounds. The decisions
must agree between the two settings (checked).
"""
import argparse
import json
import os

import numpy as np

from rbqe_tf.files import write_text
from rbqe_tf.gain import decide
from rbqe_tf.harness.latency import time_round_robin
from rbqe_tf.litert.interpreter import Value
from rbqe_tf.litert.runner import Runner


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="export folder with a gain predictor")
    p.add_argument("--sizes", default="256,512", help="image sides (default 256,512)")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    runner = Runner(a.models, num_threads=a.threads)
    if runner.predictor is None:
        p.error(f"{a.models} carries no gain predictor")
    exits = {f"exit_{k}": runner.model(f"exit_{k}") for k in (1, runner.num_exits)}
    y = np.random.default_rng(1).random((1, runner.tile, runner.tile, 1), np.float32)
    rows = []
    print(f"{a.models}: load {os.getloadavg()[0]:.1f}")
    for size in (int(s) for s in a.sizes.split(",")):
        image = (np.random.default_rng(size).random((size, size)) * 255).astype(np.uint8)

        def default():
            return decide(runner.predictor, runner.gain, image, one_thread=False)

        def one_thread():
            return decide(runner.predictor, runner.gain, image)
        if one_thread() != default():
            raise SystemExit("error: the decision differs with one BLAS thread")
        calls = {"default": default, "one_thread": one_thread,
                 **{name: (lambda m=m: m.run({"y": Value(y)})) for name, m in exits.items()}}
        stats = time_round_robin(calls, a.runs, 2)
        rows.append({"size": size, "tile": runner.tile, **stats,
                     "ratio": stats["one_thread"]["median_ms"] / stats["default"]["median_ms"]})
        print(f"{size}²: decision {stats['default']['median_ms']:.1f} ms (default BLAS threads)"
              f", {stats['one_thread']['median_ms']:.1f} ms (one thread); "
              + ", ".join(f"{n} {stats[n]['median_ms']:.1f} ms at {runner.tile}²"
                          for n in exits), flush=True)
    if a.json:
        write_text(a.json, json.dumps({"models": a.models, "runs": a.runs,
                                       "load_average_1min": os.getloadavg()[0],
                                       "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
