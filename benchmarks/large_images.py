"""Peak memory and time of enhancing large colour images: the Keras path and the TFLite runner.

For each ``--megapixels`` size (4:3) or ``HxW`` shape, a colour test image is made once
(the sample photos tiled to that size and JPEG-compressed at quality 30, so the exits
and scores behave as on a photo) and written as PNG. Each (path, size) then runs in a
fresh process that reads the file, enhances it with early exit, or at ``--exit K``
(``rbqe_tf.enhancer.Enhancer`` or ``rbqe_tf.litert.runner.Runner``, default tiling) and writes
the result, as the command lines do; the process reports its peak RSS (``ru_maxrss``),
the enhancement's wall and CPU time, the whole run's wall time, the exit and the tile
count. ``--json`` writes the rows with the settings and the machine's load.

    python -m benchmarks.large_images --megapixels 12,50 --models tflite_fp32 \\
        --json large_images.json
    python -m benchmarks.large_images --megapixels 0.5 --paths keras   # a quick check
    python -m benchmarks.large_images --megapixels 512x512,12 --paths tflite --models DIR
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from rbqe_tf.files import write_text

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")


def shape_of(size):
    """``"HxW"`` → (H, W); megapixels (a number) → a 4:3 (H, W)."""
    if "x" in size:
        h, w = (int(n) for n in size.split("x"))
        return h, w
    w = int(round((float(size) * 1e6 * 4 / 3) ** 0.5))
    return int(round(float(size) * 1e6 / w)), w


def make_image(h, w, path):
    """An RGB photo-like image of h×w (JPEG q30 artefacts), written as PNG."""
    from rbqe_tf.image_io import opencv, read_image, write_image
    cv2 = opencv()
    photos = [read_image(os.path.join(SAMPLES, n)) for n in sorted(os.listdir(SAMPLES))
              if n.endswith(".jpg")]
    photos = [p if p.ndim == 3 else np.repeat(p[:, :, None], 3, 2) for p in photos]
    side = 512
    tiles = [cv2.resize(p, (side, side), interpolation=cv2.INTER_AREA) for p in photos]
    rows = []
    for i in range(-(-h // side)):
        rows.append(np.concatenate([tiles[(i + j) % len(tiles)] for j in range(-(-w // side))], 1))
    image = np.ascontiguousarray(np.concatenate(rows, 0)[:h, :w])
    del rows
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 30])
    write_image(path, cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


def run_one(args):
    """In this process: read, enhance, write; print one JSON row."""
    from rbqe_tf import tiling
    from rbqe_tf.image_io import read_image, write_image
    start = time.perf_counter()
    if args.one == "keras":
        from rbqe_tf.cli import import_tensorflow_quietly
        import_tensorflow_quietly()
        from rbqe_tf.enhancer import Enhancer
        from rbqe_tf.model import default_weights, load_model
        from rbqe_tf.calibration import resolve_threshold
        weights = args.weights or default_weights("jpeg")
        threshold, _ = resolve_threshold("jpeg", weights, None)
        options = {"tile": args.tile, "overlap": args.overlap, "cache_mb": args.cache_mb}
        enhancer = Enhancer(load_model(weights), "jpeg", threshold,
                            **{k: v for k, v in options.items() if v is not None})
        tile, overlap, multiple = enhancer.tile, enhancer.overlap, enhancer.multiple
    else:
        from rbqe_tf.litert.runner import Runner
        enhancer = Runner(args.models, "jpeg", num_threads=args.threads, overlap=args.overlap,
                          **({} if args.cache_mb is None else {"cache_mb": args.cache_mb}))
        tile, overlap, multiple = enhancer.tile, enhancer.overlap, None
    image = read_image(args.image)
    rows, cols = (tiling.layout(n, tile, overlap, multiple) for n in image.shape[:2])
    t0, c0 = time.perf_counter(), time.process_time()
    result = enhancer(image, exit=args.exit)
    enhance_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    write_image(args.out, result.image, overwrite=True)
    print(json.dumps({
        "path": args.one, "shape": list(image.shape),
        "megapixels": round(image.shape[0] * image.shape[1] / 1e6, 2),
        "tile": tile, "overlap": overlap, "tiles": len(rows.origins) * len(cols.origins),
        "keep_tiles": enhancer.keep, "exit": int(result.exit),
        "enhance_s": round(enhance_s, 2), "enhance_cpu_s": round(cpu_s, 2),
        "total_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megapixels", default="12,50", help="comma-separated sizes in megapixels "
                   "(4:3) or HxW shapes (default 12,50)")
    p.add_argument("--paths", default="keras,tflite", help="keras and/or tflite")
    p.add_argument("--weights", help="Keras model (default: the shipped JPEG model)")
    p.add_argument("--models", help="TFLite export folder (python -m export.tflite); "
                   "needed for the tflite path")
    p.add_argument("--tile", type=int, help="Keras tile side (default: the Enhancer's)")
    p.add_argument("--overlap", type=int, help="tile overlap margin (default: each path's)")
    p.add_argument("--cache_mb", type=float, help="feature cache (default: each path's)")
    p.add_argument("--threads", type=int, default=2, help="runner threads (default 2)")
    p.add_argument("--exit", type=int, help="force this exit (default: each path's decision)")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--one", choices=("keras", "tflite"), help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return run_one(args)
    paths = args.paths.split(",")
    if "tflite" in paths and not args.models:
        p.error("the tflite path needs --models (an export folder)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.megapixels.split(","):
            image = os.path.join(tmp, f"{mp}.png")
            h, w = shape_of(mp)
            make_image(h, w, image)
            print(f"{mp}: {h}×{w} test image", flush=True)
            for path in paths:
                cmd = [sys.executable, "-m", "benchmarks.large_images", "--one", path,
                       "--image", image, "--out", os.path.join(tmp, "out.png"),
                       "--threads", str(args.threads)]
                for flag in ("weights", "models", "tile", "overlap", "cache_mb", "exit"):
                    if getattr(args, flag) is not None:
                        cmd += [f"--{flag}", str(getattr(args, flag))]
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
                if proc.returncode:
                    tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
                    print(f"  {path}: failed (exit status {proc.returncode}): {tail[0]}")
                    rows.append({"path": path, "megapixels": mp, "failed": tail[0]})
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"  {path}: peak RSS {row['peak_rss_mb']:.0f} MiB, enhance "
                      f"{row['enhance_s']:.1f} s (CPU {row['enhance_cpu_s']:.1f} s), exit "
                      f"{row['exit']}, {row['tiles']} tiles of {row['tile']}", flush=True)
    if args.json:
        write_text(args.json, json.dumps(
            {"rows": rows, "settings": {k: v for k, v in vars(args).items()
                                        if k not in ("one", "image", "out", "json")},
             "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "load_1min": os.getloadavg()[0]}}, indent=2) + "\n")
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
