"""Cost of the blind quality score (rbqe_tf.iqa; docs/method.md, "Quality score") next to the
network it gates.

Times, as the median over ``--runs`` round-robin calls after warm-up, each inside a
``tf.function`` with a fixed 1×512×512×1 float32 input: ``quality_score`` for both
codecs, RBQE stage 1 (exit 1) and a full pass to exit 5 (the monolithic model, random
weights), and prints the score's cost as a % of each. ``--json PATH`` also writes the
numbers. Wall times depend on background load: the 1-minute load average and the
process CPU time per call are reported too.

    python -m benchmarks.iqa_cost --json iqa_cost.json
"""
import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf

from rbqe_tf.iqa import quality_score
from rbqe_tf.model import build_model


def median_ms(fns, x, runs, warmup):
    """Median wall and process-CPU time in ms of each ``fns[name](x)`` (outputs fetched).

    The functions are timed round-robin so that all see the same background load; CPU
    time (all threads) is less sensitive to that load than wall time.
    """
    wall, cpu = {name: [] for name in fns}, {name: [] for name in fns}
    for i in range(warmup + runs):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for t in tf.nest.flatten(fn(x)):
                t.numpy()
            if i >= warmup:
                wall[name].append((time.perf_counter() - start) * 1e3)
                cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return ({name: statistics.median(ts) for name, ts in wall.items()},
            {name: statistics.median(ts) for name, ts in cpu.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input height and width")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (≥ 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("--runs must be at least 20")

    spec = tf.TensorSpec([1, args.size, args.size, 1], tf.float32)
    y = tf.constant(np.random.default_rng(0).random(spec.shape), tf.float32)
    model = build_model("rbqe")
    stage1 = model.stage_models()[0]
    calls = {
        "jpeg": lambda t: quality_score(t, "jpeg"),
        "hevc": lambda t: quality_score(t, "hevc"),
        "stage1": lambda t: stage1([t], training=False),
        "exit5": lambda t: model(t, training=False),
    }
    medians, cpu_ms = median_ms({name: tf.function(fn, input_signature=[spec], autograph=False)
                    for name, fn in calls.items()}, y, args.runs, args.warmup)
    score_ms = {codec: medians[codec] for codec in ("jpeg", "hevc")}
    network_ms = {net: medians[net] for net in ("stage1", "exit5")}

    results = {
        "input_shape": spec.shape.as_list(), "runs": args.runs, "warmup": args.warmup,
        "tensorflow": tf.__version__, "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        "score_ms": score_ms, "network_ms": network_ms, "cpu_ms": cpu_ms,
        "score_pct_of": {net: {codec: 100 * ms / net_ms for codec, ms in score_ms.items()}
                         for net, net_ms in network_ms.items()},
    }
    print(f"median over {args.runs} runs, input {spec.shape.as_list()}, TF {tf.__version__}, "
          f"{os.cpu_count()} CPUs, load average {results['load_average_1min']:.1f}")
    for net, net_ms in network_ms.items():
        print(f"  RBQE {net:6s}        {net_ms:9.2f} ms wall, {cpu_ms[net]:9.2f} ms CPU")
    for codec, ms in score_ms.items():
        pct = ", ".join(f"{results['score_pct_of'][net][codec]:.2f}% of {net}"
                        for net in network_ms)
        print(f"  quality_score {codec}  {ms:9.2f} ms wall, {cpu_ms[codec]:9.2f} ms CPU "
              f"(wall: {pct})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
