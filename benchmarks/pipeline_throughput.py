"""Images per second of ``python -m rbqe_tf.pipeline`` (Apache Beam, DirectRunner) beside
``python -m rbqe_tf.enhance`` on the same mixed-quality 768×512 JPEGs, run interleaved.

    python -m benchmarks.pipeline_throughput --data ../shared/data/train/bsd200 \\
        --images 200 --json pipeline_throughput.json

The inputs are the folder's first ``--images`` colour images (sorted; portrait ones turned
to landscape), resized to cover 768×512 and centre-cropped, saved as JPEG at QF 10, 20,
…, 90, 95 in turn. Each round runs, in a rotating order: the CLI (one process), the
pipeline as it runs by default (one worker process per core) and the pipeline with one
worker (the CLI's parallelism: the same two TensorFlow threads), each into a fresh folder
and as a fresh process, on all the images and on the first one alone (its start-up).
Per run: wall time, images/s, CPU seconds per image (every process of the run), the
enhancement's own time (the ms each reports per image) and whether the outputs equal the
CLI's byte for byte; per command, what each image costs after start-up (the full run
less the one-image run, per further image) in wall and CPU time, and for one-process
runs the wall time per image beyond the enhancement itself (decoding, encoding, writing,
and the pipeline's own work). Prints a table, writes ``--json``.
Needs the pipeline extra (``pip install -e ".[pipeline]"``) in the running Python.
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from rbqe_tf.image_io import opencv, read_image

SIZE = (768, 512)  # width, height
LEVELS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
CLI_MS = re.compile(r" (\d+) ms -> ")


def make_inputs(folder, count, out):
    """The first ``count`` colour images of ``folder`` as 768×512 JPEGs of mixed quality."""
    cv2 = opencv()
    made = 0
    for path in sorted(glob.glob(os.path.join(folder, "*"))):
        image = read_image(path)
        if image.ndim != 3 or image.dtype != np.uint8:
            continue
        if image.shape[0] > image.shape[1]:
            image = np.rot90(image)
        scale = max(SIZE[0] / image.shape[1], SIZE[1] / image.shape[0])
        w, h = round(image.shape[1] * scale), round(image.shape[0] * scale)
        image = cv2.resize(np.ascontiguousarray(image[..., :3]), (w, h),
                           interpolation=cv2.INTER_CUBIC)
        top, left = (h - SIZE[1]) // 2, (w - SIZE[0]) // 2
        crop = image[top:top + SIZE[1], left:left + SIZE[0], ::-1]
        level = LEVELS[made % len(LEVELS)]
        cv2.imwrite(os.path.join(out, f"{made:04d}_q{level}.jpg"),
                    np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, level])
        made += 1
        if made == count:
            break
    return made


def commands(inputs, out):
    """name → (command line, worker processes, how to read the per-image enhancement ms)."""
    cores = os.cpu_count() or 1
    pipeline = [sys.executable, "-m", "rbqe_tf.pipeline", "--input", f"{inputs}/*.jpg",
                "--output", out]
    return {"cli": ([sys.executable, "-m", "rbqe_tf.enhance", inputs, "--out", out], 1, _cli_ms),
            "pipeline": (pipeline, cores, _manifest_ms),
            "pipeline_1_worker": (pipeline + ["--direct_num_workers", "1"], 1, _manifest_ms)}


def _cli_ms(proc, out):
    return [float(m) for m in CLI_MS.findall(proc.stdout)]


def _manifest_ms(proc, out):
    (path,) = glob.glob(os.path.join(out, "manifest-*.jsonl"))
    with open(path) as f:
        return [r["ms"] for r in map(json.loads, f) if r["ms"] is not None]


def _digests(folder):
    """Output name → sha256 of its bytes."""
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.png"))):
        with open(path, "rb") as f:
            found[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
    return found


def run(name, spec, out, count):
    """One fresh run → its row."""
    command, workers, read_ms = spec
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"error: {name} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    ms = read_ms(proc, out)
    if len(ms) != count:
        sys.exit(f"error: {name} reported {len(ms)} of {count} images")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"name": name, "images": count, "workers": workers, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "images_per_s": round(count / wall, 4),
            "cpu_s_per_image": round(cpu / count, 4), "enhance_s": round(sum(ms) / 1e3, 2),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def per_image(rows):
    """Per command: start-up (the one-image runs) and each further image's cost (the full
    runs less the one-image runs), averaged over the rounds."""
    summary = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        full = [r for r in rows if r["name"] == name and r["images"] > 1]
        one = [r for r in rows if r["name"] == name and r["images"] == 1]
        n = full[0]["images"]

        def mean(runs, key):
            return sum(r[key] for r in runs) / len(runs)
        wall = (mean(full, "wall_s") - mean(one, "wall_s")) / (n - 1) * 1e3
        cpu = (mean(full, "cpu_s") - mean(one, "cpu_s")) / (n - 1) * 1e3
        enhance = mean(full, "enhance_s") / n * 1e3
        workers = full[0]["workers"]
        summary[name] = {"images_per_s": round(n / mean(full, "wall_s"), 3),
                         "startup_wall_s": round(mean(one, "wall_s"), 1),
                         "startup_cpu_s": round(mean(one, "cpu_s"), 1),
                         "wall_ms_per_image": round(wall), "cpu_ms_per_image": round(cpu),
                         "enhance_ms_per_image": round(enhance),
                         # one process: wall time per image beyond the enhancement itself
                         "beyond_enhance_ms": round(wall - enhance) if workers == 1 else None,
                         "identical_to_cli": all(r["identical_to_cli"] for r in full)}
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True,
                   help="folder of lossless colour images (training ones, not validation)")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json")
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs, one = os.path.join(tmp, "in"), os.path.join(tmp, "one")
        os.makedirs(inputs)
        os.makedirs(one)
        count = make_inputs(a.data, a.images, inputs)
        if count < a.images:
            sys.exit(f"error: {a.data} has {count} colour images, not {a.images}")
        first = sorted(os.listdir(inputs))[0]
        os.link(os.path.join(inputs, first), os.path.join(one, first))
        digests = []
        for r in range(a.rounds):
            names = list(commands(inputs, ""))
            for name in names[r % len(names):] + names[:r % len(names)]:
                for folder, n in ((inputs, count), (one, 1)):
                    out = os.path.join(tmp, f"{name}_{r}_{n}")
                    row = run(name, commands(folder, out)[name], out, n)
                    row["round"] = r
                    rows.append(row)
                    digests.append(_digests(out))
                    shutil.rmtree(out)
                    print(json.dumps(row), flush=True)
        cli = next(d for row, d in zip(rows, digests) if row["name"] == "cli" and row["images"] > 1)
        for row, found in zip(rows, digests):
            row["identical_to_cli"] = found == {name: cli[name] for name in found}
    summary = per_image(rows)
    loads = [r["load_before"] for r in rows] + [r["load_after"] for r in rows]
    print(f"\n{count} JPEGs {SIZE[0]}x{SIZE[1]}, QF {'/'.join(map(str, LEVELS))} in turn; "
          f"{os.cpu_count()} cores; {a.rounds} round(s); load {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'command':<18} {'img/s':>6} {'start-up s':>10} {'CPU s':>6} {'ms/img':>7} "
          f"{'CPU ms/img':>10} {'enhance ms':>10} {'beyond':>7}  same bytes as CLI")
    for name, s in summary.items():
        beyond = "-" if s["beyond_enhance_ms"] is None else f"{s['beyond_enhance_ms']}"
        print(f"{name:<18} {s['images_per_s']:6.3f} {s['startup_wall_s']:10.1f} "
              f"{s['startup_cpu_s']:6.1f} {s['wall_ms_per_image']:7d} {s['cpu_ms_per_image']:10d} "
              f"{s['enhance_ms_per_image']:10d} {beyond:>7}  {s['identical_to_cli']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": summary, "rows": rows,
                       "settings": {**vars(a), "size": SIZE, "levels": LEVELS,
                                    "cores": os.cpu_count(), "machine": platform.platform()}},
                      f, indent=1)


if __name__ == "__main__":
    main()
