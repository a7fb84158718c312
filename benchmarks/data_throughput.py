"""Training-patch throughput (patches/s) of rbqe_tf.data's sampler, as drivers draw it.

    python -m benchmarks.data_throughput [--src DIR ...] [--built OUT] [--json FILE]

Measures on-the-fly JPEG from --src and, if --built is given, built pairs: the median
of --windows timed windows of --window-batches batches each, after --warmup batches.
Also reports patches per CPU-second (all threads), which is robust to a shared machine.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

from rbqe_tf import data

DEFAULT_SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def measure(source, args):
    """(patches per wall second, per CPU second) of each timed window over ``source``."""
    it = data.batches(data.PatchSampler(source, args.patch, args.batch), workers=args.workers)
    for _ in range(args.warmup):
        next(it)
    wall, cpu = [], []
    for _ in range(args.windows):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(args.window_batches):
            next(it)
        n = args.window_batches * args.batch
        wall.append(n / (time.perf_counter() - start))
        cpu.append(n / (time.process_time() - start_cpu))
    return wall, cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", nargs="+", default=[str(DEFAULT_SRC)], help="ground-truth folders")
    p.add_argument("--built", help="a datasets.build output folder (optional)")
    p.add_argument("--codecs", nargs="+", default=["jpeg"], help="codecs to read from --built")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="threads making patches")
    p.add_argument("--warmup", type=int, default=20, help="batches before timing")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--window-batches", type=int, default=50)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    results = {"patch": args.patch, "batch": args.batch, "workers": args.workers,
               "cpus": os.cpu_count()}
    sources = {"on_the_fly_jpeg": lambda: data.on_the_fly_jpeg(args.src)}
    if args.built:
        sources["built"] = lambda: data.from_built(args.built, codecs=args.codecs)
    for name, load in sources.items():
        wall, cpu = measure(load(), args)
        results[name] = {"patches_per_s": statistics.median(wall), "windows": wall,
                         "patches_per_cpu_s": statistics.median(cpu)}
        print(f"{name}: {statistics.median(wall):.0f} patches/s, "
              f"{statistics.median(cpu):.0f} per CPU-second ({args.patch}x{args.patch}, "
              f"batch {args.batch}; windows: {', '.join(f'{r:.0f}' for r in wall)})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
