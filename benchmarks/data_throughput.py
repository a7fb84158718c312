"""Training-pipeline throughput (patches/s) of rbqe_tf.data.

    python -m benchmarks.data_throughput [--src DIR ...] [--built OUT] [--json FILE]

Measures on-the-fly JPEG from --src and, if --built is given, built pairs: the median
of --windows timed windows of --window-batches batches each, after --warmup batches.
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
    """Patches/s of each timed window of the dataset built from ``source``."""
    it = iter(data.make_train_dataset(source, args.patch, args.batch, seed=0))
    for _ in range(args.warmup):
        next(it)
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.window_batches):
            next(it)
        rates.append(args.window_batches * args.batch / (time.perf_counter() - start))
    return rates


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", nargs="+", default=[str(DEFAULT_SRC)], help="ground-truth folders")
    p.add_argument("--built", help="a datasets.build output folder (optional)")
    p.add_argument("--codecs", nargs="+", default=["jpeg"], help="codecs to read from --built")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--warmup", type=int, default=20, help="batches before timing")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--window-batches", type=int, default=50)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    results = {"patch": args.patch, "batch": args.batch, "cpus": os.cpu_count()}
    sources = {"on_the_fly_jpeg": lambda: data.on_the_fly_jpeg(args.src)}
    if args.built:
        sources["built"] = lambda: data.from_built(args.built, codecs=args.codecs)
    for name, load in sources.items():
        rates = measure(load(), args)
        results[name] = {"patches_per_s": statistics.median(rates), "windows": rates}
        print(f"{name}: {statistics.median(rates):.0f} patches/s "
              f"({args.patch}x{args.patch}, batch {args.batch}; windows: "
              f"{', '.join(f'{r:.0f}' for r in rates)})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
