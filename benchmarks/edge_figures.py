"""Side-by-side edge figures: Keras (tf.function) vs TFLite fp32 / fp16 / int8 at 1 and 2
threads → ``docs/benchmarks.md`` (+ JSON).

    python -m benchmarks.edge_figures --weights rbqe_tf/weights/rbqe_jpeg.keras

Per configuration: ms per exit (monolithic), achieved GMAC/s against this CPU's peak,
the staged/monolithic ratio, the quality-score cost ratio and early exit on the
mixed-quality set — every TFLite figure from one ``python -m export.benchmark`` run
(medians and ratios of the same run), Keras from a child process per thread count
(TensorFlow's thread pools are fixed at start-up). Exports are made with
``python -m export.tflite`` into ``--exports`` and reused while the weights, tile and
mode match; int8 is calibrated at ``--calib_tile`` (128) and re-shaped to the tile
(``rbqe_tf.conversion.retile``: calibration costs grow with the tile's area). The last exit of the
target configuration (int8, most threads) gets an op-level profile: one-op models
timed by the harness (``rbqe_tf.harness.op_profile``), or ``benchmark_model
--enable_op_profiling`` when ``--benchmark_model`` is given. With ``--mixed DIR`` the
harness's early-exit figures come from lossless photos JPEG-coded at QF 10–95 and left
uncompressed (``rbqe_tf.harness.images.mixed_set``; use training images), through the
decision the export ships. With ``--baseline DIR`` the target configuration's files are
timed in the same rounds as those of another export (the one before a change), so the
page's before/after ratios share one run's load. The target configuration also gets the stage hand-over
comparison (``benchmarks.stage_handover``), the gain decision's cost
(``benchmarks.decision_cost``) and, with ``--memory_shapes``, the runner's
peak RSS in a fresh process per image shape (``benchmarks.large_images``).

The page ends with the targets (met or not). Everything below the line
:data:`KEPT_MARKER` in the existing page (sections written from other commands) is kept.
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

from rbqe_tf.files import write_text
from rbqe_tf.harness.latency import cpu_info

MODES = {"fp32": "fp32", "fp16": "fp16", "int8": "int8_full_int8_io"}
PEAK_NOTE = ("2 cores × 3.6 GHz × 32 FP32 FLOP/cycle ≈ 230 GFLOP/s = 115 GMAC/s "
             "(AMD Zen 4 guest with AVX-512; a large matmul reaches ≈ 190 GFLOP/s)")
INT8_ROOF_NOTE = ("the best 3×3 int8 CONV_2D through XNNPACK's VNNI GEMM at 2 threads, "
                  "measured by python -m benchmarks.kernel_profile")
KEPT_MARKER = "<!-- Sections below are written from other commands; edge_figures keeps them. -->"
# The targets of issue 23 at the page's setting (int8, 2 threads, 512², shipped model).
RUNNER_RSS_TARGET_MB = 400.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.edge_figures",
                                description=__doc__.split("\n")[0])
    p.add_argument("--weights", help="trained .keras model (default: the shipped JPEG model)")
    p.add_argument("--tile", type=int, default=512, help="tile = image side (default 512)")
    p.add_argument("--modes", default="fp32,fp16,int8", help="TFLite modes: fp32,fp16,int8")
    p.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per measurement")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs per measurement")
    p.add_argument("--nokeras", dest="keras", action="store_false", help="skip Keras timings")
    p.add_argument("--images", help="mixed-quality image folder (default: generated set)")
    p.add_argument("--mixed", help="lossless image folder to make the mixed set from "
                   "(export.benchmark --mixed; use training images)")
    p.add_argument("--mixed_images", type=int, default=4, help="--mixed: source images")
    p.add_argument("--memory_shapes", default="",
                   help="HxW shapes or megapixels for the runner's peak RSS "
                   "(benchmarks.large_images; e.g. 512x512,12; default: none)")
    p.add_argument("--exports", default=os.path.join(tempfile.gettempdir(),
                                                     "rbqe_edge_exports"),
                   help="folder of cached exports (<mode>_<tile>/)")
    p.add_argument("--calib", help="calibration images for new int8 exports "
                   "(default: the exporter's, the repo's samples/)")
    p.add_argument("--calib_images", type=int, default=1)
    p.add_argument("--calib_tile", type=int, default=128,
                   help="int8: calibrate at this tile and re-shape to --tile (default 128)")
    p.add_argument("--val_images", type=int, default=1)
    p.add_argument("--baseline", help="another export of the target configuration (e.g. "
                   "the one before a change), timed in the same rounds as the new one: "
                   "export.benchmark --baseline; the page gets the ratios new / baseline")
    p.add_argument("--benchmark_model", help="benchmark_model binary for an op-level profile")
    p.add_argument("--peak_gmacs", type=float, default=115.0,
                   help="this CPU's float peak in GMAC/s (default 115: " + PEAK_NOTE + ")")
    p.add_argument("--peak_gmacs_int8", type=float, default=868.0,
                   help="this CPU's int8 roof in GMAC/s (default 868: " + INT8_ROOF_NOTE + ")")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks.md"))
    p.add_argument("--json", default=os.path.join(REPO, "docs", "benchmarks.json"))
    p.add_argument("--keras_worker", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    return p


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _run(cmd, **kwargs):
    log("$ " + shlex.join(cmd))
    proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True, **kwargs)
    if proc.returncode:
        sys.exit(f"error: {shlex.join(cmd[:4])} … failed:\n{proc.stderr.strip()[-2000:]}")
    return proc.stdout


def keras_worker(args):
    """Child process: per-exit median ms of the Keras model as tf.function → JSON on stdout."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.keras_worker)
    tf.config.threading.set_inter_op_parallelism_threads(args.keras_worker)
    from rbqe_tf.conversion.graphs import fixed_tile_model
    from rbqe_tf.harness.latency import time_round_robin
    from rbqe_tf.model import load_model

    model = fixed_tile_model(load_model(args.weights), args.tile)
    spec = tf.TensorSpec([1, args.tile, args.tile, 1], tf.float32)
    y = tf.constant(np.random.default_rng(0).random(spec.shape, np.float32))
    out = {}
    for k in range(1, model.rbqe_config.num_exits + 1):
        fn = tf.function(model.exit_model(k), input_signature=[spec], autograph=False)
        out[f"exit_{k}"] = time_round_robin({"x": lambda: fn(y).numpy()}, args.runs,
                                            max(1, args.warmup))["x"]
    print(json.dumps(out))


def ensure_export(args, mode):
    """Folder of a checked export of ``--weights`` in ``mode`` at ``--tile`` (cached)."""
    from rbqe_tf.litert.manifest import ManifestError, read_manifest, sha256_file
    folder = os.path.join(args.exports, f"{mode}_{args.tile}")
    try:
        m = read_manifest(folder)
        weights = (m.get("model") or {}).get("weights") or {}
        calib_tile = (m.get("calibration") or {}).get("tile", m["tile"])
        if (m["tile"] == args.tile and m["quantize"] == MODES[mode]
                and weights.get("sha256") == sha256_file(args.weights)
                and (mode != "int8" or calib_tile == min(args.calib_tile, args.tile))):
            log(f"reusing {folder}")
            return folder
    except (ManifestError, KeyError):
        pass
    cmd = [sys.executable, "-m", "export.tflite", "--weights", args.weights, "--out", folder,
           f"--quantize={mode}", f"--tile={args.tile}", "--overwrite",
           f"--calib_images={args.calib_images}", f"--val_images={args.val_images}"]
    if mode == "int8":
        cmd.append(f"--calib_tile={min(args.calib_tile, args.tile)}")
    if args.calib:
        cmd.append(f"--calib={args.calib}")
    start = time.perf_counter()
    _run(cmd)
    log(f"exported {mode} in {time.perf_counter() - start:.0f} s")
    return folder


def tflite_run(args, folder, threads, profile=None, baseline=None):
    """One export.benchmark run (with an op profile of model ``profile``, interleaved
    with the export ``baseline``) → its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "b.json")
        cmd = [sys.executable, "-m", "export.benchmark", "--models", folder, "--threads",
               str(threads), "--runs", str(args.runs), "--warmup", str(args.warmup),
               "--json", path]
        if profile:
            cmd += ["--op_profile", profile]
        if baseline:
            cmd += ["--baseline", baseline]
        if args.images:
            cmd += ["--images", args.images]
        if args.mixed:
            cmd += ["--mixed", args.mixed, "--mixed_images", str(args.mixed_images)]
        _run(cmd)
        with open(path) as f:
            return json.load(f)


def handover_run(args, folder, threads):
    """benchmarks.stage_handover on ``folder`` → its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h.json")
        _run([sys.executable, "-m", "benchmarks.stage_handover", "--models", folder,
              "--threads", str(threads), "--runs", str(args.runs), "--warmup",
              str(args.warmup), "--json", path])
        with open(path) as f:
            return json.load(f)


def decision_run(args, folder, threads):
    """benchmarks.decision_cost on ``folder`` (None without a gain predictor) → its JSON."""
    from rbqe_tf.litert.manifest import read_manifest
    if not read_manifest(folder).get("gain"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.json")
        _run([sys.executable, "-m", "benchmarks.decision_cost", "--models", folder,
              "--threads", str(threads), "--runs", str(max(args.runs, 5)), "--sizes",
              f"{args.tile},{args.tile * 2}", "--json", path])
        with open(path) as f:
            return json.load(f)


def memory_run(args, folder, threads):
    """benchmarks.large_images (runner only, exit 5 forced and the decision's own) →
    its rows."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for forced in (None, 5):
            path = os.path.join(tmp, "m.json")
            _run([sys.executable, "-m", "benchmarks.large_images", "--paths", "tflite",
                  "--models", folder, "--megapixels", args.memory_shapes, "--threads",
                  str(threads), "--json", path] + ([] if forced is None else
                                                   ["--exit", str(forced)]))
            with open(path) as f:
                rows += [{**r, "forced_exit": forced} for r in json.load(f)["rows"]]
    return rows


def benchmark_model_profile(args, folder, threads):
    """Op times of exit K of ``folder`` measured by the benchmark_model binary."""
    from rbqe_tf.harness import benchmark_model
    from rbqe_tf.litert.manifest import read_manifest
    name = f"exit_{read_manifest(folder)['num_exits']}"
    flags = benchmark_model.configs((threads,))[f"cpu_t{threads}"]
    cmd = [args.benchmark_model, f"--graph={os.path.join(folder, name + '.tflite')}",
           *(f"--{k}={v}" for k, v in flags.items()), "--enable_op_profiling=true",
           f"--num_runs={args.runs}"]
    rec = benchmark_model.parse_log(_run_merged(cmd), f"cpu_t{threads}")
    return {"source": "benchmark_model --enable_op_profiling", "model": name,
            "ops": [{"op": o["op"], "count": o["count"], "ms": o["avg_ms"],
                     "share": o["percent"] / 100} for o in rec["op_profile"]]}


def harness_profile(bench):
    """The op profile of an export.benchmark run in the page's form."""
    name, prof = next(iter(bench["op_profile"].items()))
    return {"source": "one-op models timed by export.benchmark --op_profile "
            f"(whole file {prof['whole_median_ms']:.1f} ms, one-op models sum to "
            f"{prof['ops_sum_ms']:.1f} ms)", "model": name,
            "ops": [{"op": op, **v} for op, v in prof["by_type"].items()],
            "slowest": prof["slowest"]}


def _run_merged(cmd):
    log("$ " + shlex.join(cmd))
    proc = subprocess.run(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    return proc.stdout


def _f(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(res):
    """docs/benchmarks.md from the collected results."""
    configs, peak = res["configs"], res["peak_gmacs"]
    int8_peak = res.get("peak_gmacs_int8", peak)

    def peak_of(name):
        return int8_peak if name.startswith("int8") else peak
    names = list(configs)
    k = res["num_exits"]
    lines = [
        "# Edge figures: Keras vs TFLite on this CPU", "",
        f"Written by `{res['command']}` on {res['date']} ({res['cpu']}, {res['cpus']} CPUs, "
        f"1-minute load average {res['load_average']:.1f} at the start: other jobs running on "
        "the machine inflate wall times). Re-run that command to refresh this page.", "",
        f"Model `{res['weights']}`, {res['tile']}×{res['tile']} Y input (one tile per image), "
        f"{res['runs']} timed runs after {res['warmup']} warm-up per measurement; medians. "
        "Every TFLite figure of a column comes from one `python -m export.benchmark` run "
        "(XNNPACK on); Keras is the model up to each exit as a `tf.function`.", "",
        f"**Peak**: float {PEAK_NOTE}; int8 {int8_peak:g} GMAC/s ({INT8_ROOF_NOTE}); "
        "GMAC/s = the manifest's MACs (convolution-type multiplies, "
        "`rbqe_tf/macs.py`) / median time; % of peak = GMAC/s / the peak of the "
        "configuration's arithmetic.", "",
        *([] if res["issue_setup"] else [
            "**Not the issue's setup** (the shipped `rbqe` model at 512×512): model config "
            + ", ".join(f"{k} {v}" for k, v in res["model_config"].items())
            + f", tile {res['tile']}. A smoke run; its numbers say nothing "
            "about the shipped model.", ""]),
        "## ms per exit (monolithic model up to exit k)", "",
        "| exit | GMAC | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names)]
    for e in range(1, k + 1):
        cells = [_f(configs[n]["exit_ms"][e - 1]) for n in names]
        lines.append(f"| {e} | {res['macs_per_exit'][e - 1] / 1e9:.3g} | " + " | ".join(cells)
                     + " |")
    lines += ["", f"## Achieved GMAC/s at exit {k} (% of the peak)", "",
              "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
              "| " + " | ".join(f"{_f(g)} ({_f(100 * g / peak_of(n))} %)" for n, g in
                                ((n, configs[n]["gmacs_per_s"]) for n in names)) + " |"]
    tfl = [n for n in names if configs[n].get("staged_ratio") is not None]
    lines += ["", "## Staging, score cost and early exit (TFLite)", "",
              "| | " + " | ".join(tfl) + " |", "|---|" + "---|" * len(tfl)]
    rows = [("stages 1..k / monolithic, worst exit (target ≤ 1.05)", "staged_ratio", 3),
            ("stage invokes alone / monolithic, same exit", "invokes_ratio", 3),
            ("quality score / full exit-5 pass (target ≤ 0.05)", "score_ratio", 3),
            ("early-exit ms per image", "early_ms", 1),
            ("always-exit-5 ms per image", "always_ms", 1),
            ("early / always time (target ≤ 0.5)", "early_ratio", 3),
            ("early / always MACs", "macs_ratio", 3),
            ("exit histogram (0..5)", "histogram", None),
            ("peak RSS MiB", "peak_rss_mb", 0)]
    for label, key, digits in rows:
        cells = [configs[n][key] if digits is None else _f(configs[n][key], digits) for n in tfl]
        lines.append(f"| {label} | " + " | ".join(map(str, cells)) + " |")
    if any(configs[n].get("one_exit") for n in tfl):
        lines += ["", "**Flagged**: in " + ", ".join(n for n in tfl if configs[n].get("one_exit"))
                  + " every image took one exit, so the early-exit saving there is that "
                  "exit's cost, not routing."]
    ee = res["raw"][res["targets"]["key"]]["early_exit"] if res.get("targets") else None
    if ee:
        lines += ["", f"Early exit: {ee['count']} images from `{ee['source']}` "
                  f"({ee['decision']} decision" + (
                      f", margin {ee['gain_rule']['margin']:.2f} dB, tolerance "
                      f"{ee['gain_rule']['tolerance']:.2f} dB" if ee.get("gain_rule") else "")
                  + "); exit 0 leaves an image as it is (no stage runs)."]
    hand = res.get("handover")
    if hand:
        lines += ["", f"## Stage hand-over ({res['targets']['config']}; "
                  "`python -m benchmarks.stage_handover`, one interleaved run)", "",
                  "Ratios to the monolithic `exit_k` file of the same round. *copies*: stages "
                  "1..k with features copied out and in (`get_tensor`/`set_tensor`, the runner "
                  "before); *views*: as the score decisions run them now; *invokes*: the stage "
                  "files' invokes alone (views − invokes = what the hand-over still costs); "
                  "*runner, exit known*: "
                  "the whole runner on a one-tile image with the exit given (how the gain "
                  "decision runs: the monolithic file); *runner staged*: the same runner "
                  "made to stage; *own ms*: the runner's work around the file, timed with the "
                  "file's invoke replaced by a no-op.", "",
                  "| exit | monolithic ms | copies | views | invokes | runner, exit known | "
                  "runner staged | own ms |", "|---|---|---|---|---|---|---|---|"]
        for r in hand["exits"]:
            lines.append(f"| {r['exit']} | {r['monolithic']['median_ms']:.1f} | "
                         + " | ".join(f"{r[n + '_ratio']:.3f}" for n in
                                      ("copies", "views", "invokes", "runner",
                                       "runner_staged"))
                         + f" | {r['runner_own_ms']:.2f} |")
    decision = res.get("decision")
    if decision:
        lines += ["", "## Gain decision cost (`python -m benchmarks.decision_cost`, one "
                  "interleaved run)", "",
                  "The float NumPy predictor the export ships, on a random gray image. NumPy's "
                  "bundled OpenBLAS splits its small DCT products over both cores; the decision "
                  "keeps it on one thread, in the runner and the Keras `Enhancer` alike "
                  "(`rbqe_tf.gain.one_blas_thread`; same decisions, checked).", "",
                  "| image | default BLAS threads ms | one thread ms | ratio |",
                  "|---|---|---|---|"]
        for r in decision["rows"]:
            lines.append(f"| {r['size']}² | {r['default']['median_ms']:.1f} | "
                         f"{r['one_thread']['median_ms']:.1f} | {r['ratio']:.3f} |")
    memory = res.get("memory")
    if memory:
        lines += ["", "## Runner peak memory (`python -m benchmarks.large_images`, "
                  f"{res['targets']['config']}, a fresh process per row)", "",
                  "| image | tiles | exit | peak RSS MiB | enhance s |", "|---|---|---|---|---|"]
        for r in memory:
            if "failed" in r:
                lines.append(f"| {r['megapixels']} | – | – | failed: {r['failed']} | – |")
                continue
            how = "forced" if r["forced_exit"] else "decided"
            lines.append(f"| {r['shape'][0]}×{r['shape'][1]} | {r['tiles']} of {r['tile']}² | "
                         f"{r['exit']} ({how}) | {r['peak_rss_mb']:.0f} | "
                         f"{r['enhance_s']:.2f} |")
    t = res.get("targets")
    if t:
        lines += ["", f"## Targets ({t['config']}; figures taken under the load stated above)",
                  "", "| target | value | limit | met |", "|---|---|---|---|"]
        for name, v in t["values"].items():
            met = {True: "yes", False: "no", None: f"flagged: {v.get('flag')}"}[v["met"]]
            lines.append(f"| {TARGET_LABELS.get(name, name)} | "
                         f"{_f(v['value'], 1 if v['limit'] >= 10 else 3)} | "
                         f"≤ {v['limit']:g} | {met} |")
    lines += baseline_lines(res)
    prof = res.get("profile")
    if prof and prof["ops"]:
        lines += ["", f"## Op-level profile of {prof['model']} ({prof['config']}; "
                  f"{prof['source']})", "",
                  "| op | count | ms | % of op time | GMAC | GMAC/s |", "|---|---|---|---|---|---|"]
        for o in prof["ops"]:
            macs, rate = o.get("macs"), o.get("gmacs_per_s")
            lines.append(f"| {o['op']} | {o['count']} | {o['ms']:.2f} | {100 * o['share']:.1f} | "
                         f"{'–' if macs is None else f'{macs / 1e9:.3f}'} | {_f(rate)} |")
    lines += ["", "## Re-running", "",
              "Exports are cached in `--exports` (one per mode and tile, reused while the "
              "weights match; delete a folder to re-export after changing the exporter). int8 calibration runs TensorFlow's calibrator single-threaded "
              "(its time grows with the tile's area, docs/export.md), so int8 files are "
              "calibrated at `--calib_tile` (128) and re-shaped to "
              "the tile (`rbqe_tf/conversion/retile.py`; the export's checks then run at the "
              "full tile). "
              "Options: `--modes fp32,int8`, `--threads 2`, "
              "`--tile 256`, `--runs`, `--nokeras`, `--images DIR`. This run took "
              f"{res['seconds']:.0f} s (exports included: {res['export_seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def baseline_lines(res):
    """The before/after table: every file of the target configuration against the
    ``--baseline`` export's file of the same name, timed in the same rounds."""
    base = res["raw"][res["targets"]["key"]].get("baseline") if res.get("targets") else None
    if not base:
        return []
    lines = ["", f"## Before / after ({res['targets']['config']}; `--baseline "
             f"{base['folder']}`, both exports' files timed in the same rounds)", "",
             "| file | new ms | baseline ms | new / baseline |", "|---|---|---|---|"]
    for name, r in base["models"].items():
        lines.append(f"| {name} | {r['median_ms']:.1f} | {r['baseline_median_ms']:.1f} | "
                     f"{r['ratio']:.3f} |")
    return lines


TARGET_LABELS = {
    "exit_5_ms": "int8 exit 5, ms per 512² tile",
    "exit_1_ms": "int8 exit 1, ms per 512² tile",
    "staged_over_monolithic": "stages 1..k / monolithic exit k, worst k (score decisions)",
    "runner_known_exit_over_monolithic": "runner with the exit known (gain decision): "
                                         "(exit k + the runner's own work) / exit k, worst k",
    "score_over_full_pass": "quality score / full exit-5 pass",
    "early_exit_over_always_last": "early exit / always exit 5, mixed set, shipped decision",
    "runner_peak_rss_mb": "runner peak RSS at 512² (MiB), worst exit",
}


def extra_targets(handover, memory):
    """Targets measured outside export.benchmark: the runner's known-exit path against
    the monolithic file, and the runner's peak RSS at 512²."""
    out = {}
    if handover:  # the runner's own work timed alone: a ratio of two noisy medians
        # of 25–150 ms cannot resolve its ~1 ms
        worst = max(1 + r["runner_own_ms"] / r["monolithic"]["median_ms"]
                    for r in handover["exits"])
        out["runner_known_exit_over_monolithic"] = {"value": worst, "limit": 1.05,
                                                    "met": worst <= 1.05}
    rss = [r["peak_rss_mb"] for r in memory or () if r.get("shape", [])[:2] == [512, 512]]
    if rss:
        out["runner_peak_rss_mb"] = {"value": max(rss), "limit": RUNNER_RSS_TARGET_MB,
                                     "met": max(rss) <= RUNNER_RSS_TARGET_MB}
    return out


def kept_sections(path):
    """The marker line and what follows it in the existing page (else just the marker)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    at = text.find(KEPT_MARKER)
    return "\n" + (text[at:] if at >= 0 else KEPT_MARKER + "\n")


def _summary(bench):
    ee = bench["early_exit"]
    k = bench["export"]["num_exits"]
    worst = max(bench["exits"], key=lambda r: r["ratio"])
    return {"exit_ms": [r["monolithic"]["median_ms"] for r in bench["exits"]],
            "gmacs_per_s": bench["exits"][-1]["gmacs_per_s"],
            "staged_ratio": worst["ratio"], "invokes_ratio": worst["invokes_ratio"],
            "score_ratio": bench["score"]["ratio"], "early_ms": ee["mean_ms"],
            "always_ms": ee["always_last_mean_ms"], "early_ratio": ee["ratio"],
            "macs_ratio": ee["macs_ratio"],
            "histogram": "/".join(str(ee["histogram"][str(e)]) for e in range(0, k + 1)),
            "one_exit": ee["one_exit"],
            "peak_rss_mb": bench["memory"]["peak_rss_mb"]}


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.weights is None:
        args.weights = os.path.join(REPO, "rbqe_tf", "weights", "rbqe_jpeg.keras")
    args.weights = os.path.abspath(args.weights)
    if not os.path.isfile(args.weights):
        sys.exit(f"error: --weights {args.weights}: no such file")
    if args.keras_worker:
        return keras_worker(args)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES):
        sys.exit(f"error: --modes: expected some of {','.join(MODES)}, got {args.modes}")
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        sys.exit(f"error: --threads: expected numbers like 1,2, got {args.threads}")
    res = {"command": "python -m benchmarks.edge_figures " + shlex.join(
               sys.argv[1:] if argv is None else argv),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "cpu": cpu_info()["model"], "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
           "weights": (os.path.relpath(args.weights, REPO)
                       if args.weights.startswith(REPO + os.sep) else args.weights),
           "tile": args.tile,
           "runs": args.runs, "warmup": args.warmup, "peak_gmacs": args.peak_gmacs,
           "peak_gmacs_int8": args.peak_gmacs_int8,
           "configs": {}, "raw": {}}
    start = time.perf_counter()
    from rbqe_tf.litert.manifest import read_manifest
    folders = {m: ensure_export(args, m) for m in modes}
    res["export_seconds"] = time.perf_counter() - start
    if args.keras:
        for t in threads:
            out = _run([sys.executable, "-m", "benchmarks.edge_figures", "--keras_worker",
                        str(t), "--weights", args.weights, "--tile", str(args.tile),
                        "--runs", str(args.runs), "--warmup", str(args.warmup)])
            keras = json.loads(out.strip().splitlines()[-1])
            res["raw"][f"keras_t{t}"] = keras
            res["configs"][f"Keras t{t}"] = {"exit_ms": [keras[f"exit_{e}"]["median_ms"]
                                                         for e in range(1, len(keras) + 1)]}
    target_mode = "int8" if "int8" in modes else modes[-1]
    for m in modes:
        last = f"exit_{read_manifest(folders[m])['num_exits']}"
        for t in threads:
            target = m == target_mode and t == max(threads)
            profiled = target and not args.benchmark_model
            bench = tflite_run(args, folders[m], t, last if profiled else None,
                               args.baseline if target else None)
            res["raw"][f"{m}_t{t}"] = bench
            res["configs"][f"{m} t{t}"] = _summary(bench)
            if profiled:
                res["profile"] = {"config": f"{m}, {t} threads", **harness_profile(bench)}
    from rbqe_tf.config import get_config
    config = read_manifest(folders[modes[0]])["model"]["config"]
    res["model_config"] = config
    res["issue_setup"] = args.tile == 512 and config == get_config("rbqe").to_dict()
    first = res["raw"][f"{modes[0]}_t{threads[0]}"]
    res["num_exits"] = first["export"]["num_exits"]
    res["macs_per_exit"] = [r["macs"] for r in first["exits"]]
    for cfg in res["configs"].values():
        cfg.setdefault("gmacs_per_s", res["macs_per_exit"][-1] / cfg["exit_ms"][-1] / 1e6)
    key = f"{target_mode}_t{max(threads)}"
    res["handover"] = handover_run(args, folders[target_mode], max(threads))
    res["decision"] = decision_run(args, folders[target_mode], max(threads))
    res["memory"] = (memory_run(args, folders[target_mode], max(threads))
                     if args.memory_shapes else None)
    res["targets"] = {"config": f"{target_mode}, {max(threads)} threads", "key": key,
                      "values": {**res["raw"][key]["targets"],
                                 **extra_targets(res["handover"], res["memory"])}}
    if args.benchmark_model:
        res["profile"] = {"config": f"{target_mode}, {max(threads)} threads",
                          **benchmark_model_profile(args, folders[target_mode], max(threads))}
    res["seconds"] = time.perf_counter() - start
    text = markdown(res) + kept_sections(args.out)
    for path, data in ((args.out, text), (args.json, json.dumps(res, indent=1) + "\n")):
        if path:
            write_text(path, data)
            log(f"wrote {path}")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
