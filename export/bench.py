"""``python -m export.bench --models DIR``: median latency of every model of an export
(ai-edge-litert + NumPy only, so it runs where the runner runs).

Times each file on a fixed random input, then one staged run of a tile through all
stages with the score after exits 1..K−1 (what an image that never exits early costs).
"""
import argparse
import time

import numpy as np

from export.litert_model import Value, open_model
from export.manifest import read_manifest
from export.stages import iterate_stages


def _random_feeds(model, rng):
    feeds = {}
    for name, (index, dtype, quant) in model.inputs.items():
        shape = model.interpreter.get_tensor(index).shape
        if quant is None:
            feeds[name] = Value(rng.random(shape, np.float32))
        else:
            feeds[name] = Value(rng.integers(-128, 128, shape).astype(dtype), quant)
    return feeds


def median_ms(fn, repeats):
    fn()  # warm-up: allocations, XNNPACK weight packing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.split("\n")[0])
    p.add_argument("--models", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--noxnnpack", dest="xnnpack", action="store_false")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    manifest = read_manifest(args.models)
    rng = np.random.default_rng(0)
    models = {name: open_model(args.models, manifest, name, args.threads, args.xnnpack)
              for name in manifest["files"]}
    print(f"{args.models}: {manifest['quantize']}, tile {manifest['tile']}, "
          f"{args.threads} threads, XNNPACK {'on' if args.xnnpack else 'off'}")
    for name, model in models.items():
        feeds = _random_feeds(model, rng)
        print(f"  {name:12s} {median_ms(lambda: model.run(feeds), args.repeats):8.1f} ms")
    k = manifest["num_exits"]
    stages = [models[f"stage_{s}"] for s in range(1, k + 1)]
    y = rng.random((1, manifest["tile"], manifest["tile"], 1), np.float32)
    for codec in manifest["codecs"]:
        score = models[f"score_{codec}"]

        def staged():
            for s, out in enumerate(iterate_stages(stages, y), 1):
                if s < k:
                    score.run({"exit": out})

        print(f"  all stages + {k - 1} {codec} scores {median_ms(staged, args.repeats):8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
