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

``--op_types``: where the stage files' extra time goes — every op of the last exit's
monolithic file and of stages 1..K timed alone as one-op models
(``rbqe_tf.harness.op_profile``), summed by op type, side by side. TensorFlow-free
(ai-edge-litert + NumPy).
"""
import argparse
import json
import os
import platform

import numpy as np

from rbqe_tf.files import write_text
from rbqe_tf.harness.latency import peak_rss_mb, time_round_robin
from rbqe_tf.harness.op_profile import profile
from rbqe_tf.litert.interpreter import Value
from rbqe_tf.litert.manifest import checked_path
from rbqe_tf.litert.runner import Runner
from rbqe_tf.litert.stages import iterate_stages


def _copies(stages, y):
    values = {"y": Value(y)}
    for stage in stages:
        values.update(stage.run({name: values[name] for name in stage.inputs}))
    return values["exit"]


def _op_types(a, runner):
    """{"exit": by type, "stages": by type summed over stages 1..K} of one-op model times."""
    k = runner.num_exits

    def by_type(name):
        path = checked_path(runner.folder, runner.manifest, name)
        return profile(path, a.threads, a.runs, a.warmup)["by_type"]
    monolithic, stages = by_type(f"exit_{k}"), {}
    for s in range(1, k + 1):
        for op, t in by_type(f"stage_{s}").items():
            total = stages.setdefault(op, {"count": 0, "ms": 0.0})
            total["count"] += t["count"]
            total["ms"] += t["ms"]
    print(f"op type | exit_{k} ops | exit_{k} ms | stages 1..{k} ops | stages ms | extra ms")
    none = {"count": 0, "ms": 0.0}
    for op in sorted(set(monolithic) | set(stages), key=lambda o: -stages.get(o, none)["ms"]):
        m, s = monolithic.get(op, none), stages.get(op, none)
        print(f"{op} | {m['count']} | {m['ms']:.1f} | {s['count']} | {s['ms']:.1f} | "
              f"{s['ms'] - m['ms']:+.1f}")
    return {"exit": monolithic, "stages": stages}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="export folder (python -m export.tflite)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--op_types", action="store_true",
                   help="also time the last exit's and the stages' ops by type (one-op models)")
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
    op_types = _op_types(a, runner) if a.op_types else None
    rss, source = peak_rss_mb()
    result = {"command": "python -m benchmarks.stage_handover " + " ".join(argv or []),
              "models": a.models, "quantize": runner.manifest["quantize"], "tile": tile,
              "threads": a.threads, "runs": a.runs, "warmup": a.warmup,
              "load_average_1min": os.getloadavg()[0], "platform": platform.platform(),
              "peak_rss_mb": rss, "rss_source": source, "exits": rows,
              "op_types": op_types}
    if a.json:
        write_text(a.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
