"""Training throughput (steps/s, pixels/s) of the full RBQE training step on this machine.

    python -m benchmarks.train_throughput [--variant rbqe] [--configs 8x96,8x128,16x64,4x192]
        [--precisions fp32,bf16] [--json FILE]

Times :class:`rbqe_tf.train_step.TrainStep` (forward, 5-exit weighted loss, backward,
Adam; default strategy) on in-memory random batches, so the input pipeline is not
measured (see benchmarks/data_throughput.py). Reports the median of --windows timed
windows of --window-steps steps after --warmup steps, and steps per CPU-second (all
threads), which is less sensitive to other processes on a shared machine.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rbqe_tf.levels import exit_weights
from rbqe_tf.model import build_model
from rbqe_tf.train_config import TrainConfig
from rbqe_tf.train_step import TrainStep

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}
DEFAULT = TrainConfig(data=[], run_dir="")


def random_batch(batch, patch, seed=0):
    """One fixed random (compressed, target, exit weights) batch, as tensors."""
    rng = np.random.default_rng(seed)
    target = rng.random((batch, patch, patch, 1), np.float32)
    compressed = np.clip(target + 0.05 * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
    weights = exit_weights(rng.uniform(0, 4, batch)).astype(np.float32)
    return tuple(tf.constant(a) for a in (compressed, target, weights))


def measure(variant, batch, patch, precision, args):
    """Per-window (steps per wall second, steps per CPU second) and the final loss."""
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        keras.utils.set_random_seed(0)
        model = build_model(variant)
        step = TrainStep(model, tf.distribute.get_strategy(), batch)
        data = random_batch(batch, patch)
        for _ in range(args.warmup):
            loss = step.step(data, 1e-3)[0]
        wall, cpu = [], []
        for _ in range(args.windows):
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.window_steps):
                loss = step.step(data, 1e-3)[0]
            loss.numpy()
            wall.append(args.window_steps / (time.perf_counter() - start))
            cpu.append(args.window_steps / (time.process_time() - start_cpu))
        return wall, cpu, float(loss)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="rbqe")
    p.add_argument("--configs", default=f"{DEFAULT.batch}x{DEFAULT.patch},8x128,16x64,4x192",
                   help="comma-separated BATCHxPATCH; the first is the training default")
    p.add_argument("--precisions", default="fp32,bf16", help=f"of {', '.join(POLICIES)}")
    p.add_argument("--warmup", type=int, default=3, help="steps before timing")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--window-steps", type=int, default=5)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    results = {"variant": args.variant, "cpus": os.cpu_count(), "tensorflow": tf.__version__,
               "runs": []}
    for config in args.configs.split(","):
        batch, patch = (int(v) for v in config.split("x"))
        for precision in args.precisions.split(","):
            wall, cpu, loss = measure(args.variant, batch, patch, precision, args)
            steps = statistics.median(wall)
            run = {"batch": batch, "patch": patch, "precision": precision,
                   "steps_per_s": steps, "pixels_per_s": steps * batch * patch * patch,
                   "steps_per_cpu_s": statistics.median(cpu), "windows": wall,
                   "loss_after": loss}
            results["runs"].append(run)
            print(f"{args.variant} {batch}x{patch}² {precision}: {steps:.3f} steps/s, "
                  f"{run['pixels_per_s'] / 1e3:.1f} kpixel/s, {run['steps_per_cpu_s']:.3f} "
                  f"steps/CPU-s, loss after {loss:.3g} "
                  f"(windows: {', '.join(f'{w:.3f}' for w in wall)})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
