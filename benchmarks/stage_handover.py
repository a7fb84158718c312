"""Staged execution against the monolithic exit, three ways, in one interleaved run.

    python -m benchmarks.stage_handover --models runs/edge/int8_512 [--runs 10] [--json OUT]

Per exit k, on a random tile, each round times (medians over ``--runs`` rounds):

- ``monolithic``: ``exit_k.tflite``;
- ``copies``: stages 1..k with every feature copied out of one interpreter and into the
  next (``get_tensor``/``set_tensor``: the runner's hand-over before views);
- ``views``: stages 1..k as ``rbqe_tf.litert.stages.iterate_stages`` runs them now (outputs left
  in the producing interpreter, one copy into the reading stage's input);
- ``invokes``: the stage files' invokes alone (inputs left set by ``views``), so
  ``views`` − ``invokes`` is what the hand-over still costs;
- ``runner``: the whole ``Runner`` on a one-tile image with exit k forced, which is how
  the gain decision runs it (the monolithic file), beside ``runner_staged``, the same
  runner made to stage.

Ratios are to ``monolithic``. Then ``runner_own_ms``: the runner's own work around the
file (padding, quantizing, stitching, colour), timed with the file's ``invoke`` replaced
by a no-op — a few ratios of two noisy medians cannot resolve it under load.
TensorFlow-free (ai-edge-litert + NumPy).
"""
import argparse
import json
import os
import platform

import numpy as np

from rbqe_tf.files import write_text
from rbqe_tf.harness.latency import peak_rss_mb, time_round_robin
from rbqe_tf.litert.interpreter import Value
from rbqe_tf.litert.runner import Runner
from rbqe_tf.litert.stages import iterate_stages


def _copies(stages, y):
    values = {"y": Value(y)}
    for stage in stages:
        values.update(stage.run({name: values[name] for name in stage.inputs}))
    return values["exit"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="export folder (python -m export.tflite)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    runner, staged = (Runner(a.models, num_threads=a.threads) for _ in range(2))
    staged.monolithic = False
    tile, k_max = runner.tile, runner.num_exits
    stages = runner.stages
    rng = np.random.default_rng(0)
    y = rng.random((1, tile, tile, 1), np.float32)
    image = (rng.random((tile, tile)) * 255).astype(np.uint8)
    rows = []
    print(f"{a.models}: {runner.manifest['quantize']}, tile {tile}, {a.threads} threads, "
          f"load {os.getloadavg()[0]:.1f}")
    print("exit | monolithic ms | copies (ratio) | views (ratio) | stage invokes alone (ratio) "
          "| runner, exit forced (ratio) | runner staged (ratio) | runner's own work ms")
    for k in range(1, k_max + 1):
        exit_k = runner.model(f"exit_{k}")
        stats = time_round_robin({
            "monolithic": lambda: exit_k.run({"y": Value(y)}),
            "copies": lambda: _copies(stages[:k], y),
            "views": lambda: [None for _ in iterate_stages(stages[:k], y)],
            "invokes": lambda: [stage.interpreter.invoke() for stage in stages[:k]],
            "runner": lambda: runner(image, exit=k),
            "runner_staged": lambda: staged(image, exit=k),
        }, a.runs, a.warmup)
        mono = stats["monolithic"]["median_ms"]
        exit_k.interpreter.invoke = lambda: None  # an instance attribute: del restores it
        try:
            own = time_round_robin({"own": lambda: runner(image, exit=k)}, a.runs, 1)["own"]
        finally:
            del exit_k.interpreter.invoke
        row = {"exit": k, **stats, **{f"{name}_ratio": stats[name]["median_ms"] / mono
                                      for name in stats if name != "monolithic"},
               "runner_own_ms": own["median_ms"]}
        rows.append(row)
        print(f"{k} | {mono:.1f} | " + " | ".join(
            f"{stats[n]['median_ms']:.1f} ({row[n + '_ratio']:.3f})"
            for n in ("copies", "views", "invokes", "runner", "runner_staged"))
              + f" | {row['runner_own_ms']:.2f}", flush=True)
    rss, source = peak_rss_mb()
    result = {"command": "python -m benchmarks.stage_handover " + " ".join(argv or []),
              "models": a.models, "quantize": runner.manifest["quantize"], "tile": tile,
              "threads": a.threads, "runs": a.runs, "warmup": a.warmup,
              "load_average_1min": os.getloadavg()[0], "platform": platform.platform(),
              "peak_rss_mb": rss, "rss_source": source, "exits": rows}
    if a.json:
        write_text(a.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
