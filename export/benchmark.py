"""``python -m export.benchmark --models DIR --json OUT.json``: what early exit saves,
measured on this device (ai-edge-litert + NumPy; OpenCV only for the image set).

1. Every model file: ``--warmup`` untimed then ``--runs`` timed invokes (files taken
   round-robin) → min / median / p90 ms, and GMAC/s from the manifest's MACs.
2. Each exit k: the monolithic ``exit_k`` vs stages 1..k run as the runner runs them
   (``export.stages``, features passed on), timed alternately → ratio; and the stage
   files' invokes alone, which separates their compute from passing features on.
3. The quality-score model's cost, and its ratio to a full exit-K pass.
4. A mixed-quality image set through ``export.runner.Runner`` with the export's own
   decision (the gain decision where it carries a predictor): early exit vs always
   exit K — mean ms per image, exit histogram 0..K, MACs per image (tiles × the
   manifest's MACs; exit 0 runs no stage). ``--mixed DIR`` makes the set from lossless
   photos (JPEG QF 10–95 and uncompressed, ``bench_images.mixed_set``), ``--images DIR``
   takes files as they are, else generated scenes are used. A saving measured while
   every image took one exit says nothing about routing: it is flagged, and its target
   is not counted as met.
5. Peak resident memory; energy per image from battery counters with
   ``--energy_seconds`` (``export.energy``), else MACs per image as the proxy.
6. With ``--op_profile exit_5``: time per op and op type (``export.op_profile``).

``--baseline DIR`` times another export (e.g. the one before a change) in the same
rounds: every model file both folders hold, and each image of the set through both
runners, interleaved, so the ratios (medians, new / baseline) share the background load.

``--print_commands`` prints the official ``benchmark_model`` command lines for the
export instead, and ``--parse_logs DIR`` turns their logs into the same kind of JSON
(``export.benchmark_model``). Errors are one ``error:`` line (exit status 2).
"""
import argparse
import json
import os
import platform
import shlex
import sys
import time

import numpy as np

from export import benchmark_model, op_profile
from export.bench_images import GENERATED_QUALITIES, folder_set, generated_set, mixed_set
from export.energy import DEFAULT_ROOT, EnergyMeter
from export.latency import Progress, cpu_count, peak_rss_mb, time_round_robin
from export.litert_model import ModelError, Value
from export.manifest import ManifestError, checked_path, read_manifest
from export.op_macs import read_op_macs
from export.runner import Runner
from export.stages import iterate_stages
from rbqe_tf import tiling
from rbqe_tf.files import write_text
from rbqe_tf.image_io import ImageError

# The targets of docs/benchmarks.md (int8, 2 threads, 512×512 on the development CPU);
# the millisecond ones apply at that tile only.
TARGETS = {"staged_over_monolithic": 1.05, "score_over_full_pass": 0.05,
           "early_exit_over_always_last": 0.5}
TILE_TARGETS = {512: {"exit_5_ms": 100.0, "exit_1_ms": 40.0}}


def _parser():
    p = argparse.ArgumentParser(prog="python -m export.benchmark",
                                description=__doc__.split("\n")[0])
    p.add_argument("--models", help="export folder (python -m export.tflite)")
    p.add_argument("--images", help="folder of compressed test images (default: generated "
                   f"scenes at JPEG QF {', '.join(str(q) for q in GENERATED_QUALITIES if q)} "
                   "and uncompressed)")
    p.add_argument("--mixed", help="folder of lossless images (recursive) to make the set "
                   "from: Y crops JPEG-coded at QF 10-95 and uncompressed (use training images)")
    p.add_argument("--mixed_images", type=int, default=4,
                   help="--mixed: this many source images (default 4; 11 variants each)")
    p.add_argument("--size", type=int, help="side of the generated images and --mixed crops "
                   "(default: the tile)")
    p.add_argument("--baseline", help="another export folder to time interleaved with "
                   "--models (ratios new / baseline)")
    p.add_argument("--codec", choices=("jpeg", "hevc"), help="score model and threshold "
                   "(default: the export's first codec)")
    p.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    p.add_argument("--noxnnpack", dest="xnnpack", action="store_false",
                   help="plain TFLite kernels instead of the XNNPACK CPU delegate")
    p.add_argument("--delegate", help="delegate library for the exit and stage models")
    p.add_argument("--runs", type=int, default=10, help="timed invokes per model (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed invokes first (default 2)")
    p.add_argument("--image_repeats", type=int, default=1,
                   help="runs per image and mode; the median counts (default 1)")
    p.add_argument("--energy_seconds", type=float, default=0.0,
                   help="repeat the image set for at least this long per mode while reading "
                   "battery counters (0: energy not measured)")
    p.add_argument("--power_supply", default=DEFAULT_ROOT, help="power-supply sysfs folder")
    p.add_argument("--op_profile", default="", metavar="MODEL[,MODEL]",
                   help="op-level timing of these model files, e.g. exit_5 (one-op models, "
                   "export.op_profile; default: none)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--markdown", help="write a markdown summary here")
    p.add_argument("--print_commands", "--print-commands", action="store_true",
                   help="print benchmark_model command lines for --models and exit")
    p.add_argument("--binary", default="benchmark_model", help="benchmark_model path "
                   "(as the device sees it) for --print_commands")
    p.add_argument("--device_dir", help="folder of the models on the device "
                   "(default: --models)")
    p.add_argument("--log_dir", default="bm_logs", help="log folder for --print_commands")
    p.add_argument("--gpu", action="store_true", help="--print_commands: add GPU lines")
    p.add_argument("--profile", action="store_true",
                   help="--print_commands: --enable_op_profiling=true")
    p.add_argument("--parse_logs", "--parse-logs", metavar="DIR",
                   help="parse benchmark_model logs in DIR into --json/--markdown")
    return p


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def _random_feeds(model, rng):
    feeds = {}
    for name, (index, dtype, quant) in model.inputs.items():
        shape = model.interpreter.get_tensor(index).shape
        feeds[name] = (Value(rng.random(shape, np.float32)) if quant is None else
                       Value(rng.integers(-128, 128, shape).astype(dtype), quant))
    return feeds


def _gmacs(macs, ms):
    return macs / ms / 1e6 if macs and ms else None


def exit_rows(times, manifest, key="median_ms"):
    """Per exit: monolithic vs the sum of stages 1..k of separately timed files (for
    benchmark_model logs); ``times``: model name → stats dict."""
    rows = []
    for k in range(1, manifest["num_exits"] + 1):
        stages = [times.get(f"stage_{s}", {}).get(key) for s in range(1, k + 1)]
        mono = times.get(f"exit_{k}", {}).get(key)
        if mono is None or None in stages:
            continue
        rows.append({"exit": k, "monolithic_ms": mono, "staged_ms": sum(stages),
                     "ratio": sum(stages) / mono,
                     "gmacs_per_s": _gmacs(manifest["macs"]["per_exit"][k - 1], mono)})
    return rows


class Bench:
    """One benchmark run of an export folder (see the module docstring)."""

    def __init__(self, args, command):
        self.args, self.folder, self.command = args, args.models, command
        self.manifest = read_manifest(args.models)
        self.codec = args.codec or self.manifest["codecs"][0]
        if self.codec not in self.manifest["codecs"]:
            raise ManifestError(f"{args.models}: exported for "
                                f"{', '.join(self.manifest['codecs'])}, not {self.codec}")
        self.k = self.manifest["num_exits"]
        self.runner = Runner(self.folder, self.codec, None, args.threads, args.xnnpack,
                             args.delegate)
        # The runner's own interpreters are timed (no second copy of any model).
        self.models = {name: self.runner.model(name) for name in self.manifest["files"]}
        self.base = args.baseline and Runner(args.baseline, self.codec, None, args.threads,
                                             args.xnnpack, args.delegate)
        self.base_models = {} if not self.base else {
            name: self.base.model(name) for name in self.base.manifest["files"]
            if name in self.models}
        if self.base and self.base.tile != self.runner.tile:
            raise ManifestError(f"--baseline {args.baseline}: tile {self.base.tile}, "
                                f"--models has {self.runner.tile}")
        self.op_profile = [n for n in args.op_profile.split(",") if n]
        unknown = [n for n in self.op_profile if n not in self.manifest["files"]]
        if unknown:
            raise ManifestError(f"--op_profile: {args.models} has no model {', '.join(unknown)}"
                                f" (it has {', '.join(self.manifest['files'])})")
        size = args.size or self.manifest["tile"]
        self.images = (folder_set(args.images) if args.images else
                       mixed_set(args.mixed, size, args.mixed_images) if args.mixed else
                       generated_set(size))
        if not self.images:
            raise ImageError(f"{args.images or args.mixed}: no image files")

    def _macs(self, name):
        kind, _, k = name.partition("_")
        per = {"exit": "per_exit", "stage": "per_stage"}.get(kind)
        return self.manifest["macs"][per][int(k) - 1] if per else 0

    def model_files(self):
        """→ (stats per model, baseline comparison or None); baseline files run in the
        same rounds as the new ones."""
        calls = {}
        for prefix, models in (("", self.models), ("baseline/", self.base_models)):
            rng = np.random.default_rng(0)
            for name, model in models.items():
                model.run(_random_feeds(model, rng))  # inputs stay set; invokes are timed
                calls[prefix + name] = model.interpreter.invoke
        stats = time_round_robin(calls, self.args.runs, self.args.warmup)
        files = {name: stats[name] for name in self.models}
        for name, s in files.items():
            s["macs"] = self._macs(name)
            s["gmacs_per_s"] = _gmacs(s["macs"], s["median_ms"])
            s["bytes"] = self.manifest["files"][name]["bytes"]
        if not self.base:
            return files, None
        return files, {name: {"median_ms": files[name]["median_ms"],
                              "baseline_median_ms": stats["baseline/" + name]["median_ms"],
                              "ratio": files[name]["median_ms"]
                              / stats["baseline/" + name]["median_ms"]}
                       for name in self.base_models}

    def staged_vs_monolithic(self, progress):
        tile = self.manifest["tile"]
        y = np.random.default_rng(1).random((1, tile, tile, 1), np.float32)
        stages = [self.models[f"stage_{s}"] for s in range(1, self.k + 1)]
        rows = []
        for k in range(1, self.k + 1):
            exit_k = self.models[f"exit_{k}"]
            stats = time_round_robin({
                "monolithic": lambda: exit_k.run({"y": Value(y)}),
                "staged": lambda: [None for _ in iterate_stages(stages[:k], y)],
                # the stage files' compute alone (inputs left set by the staged run)
                "stage_invokes": lambda: [s.interpreter.invoke() for s in stages[:k]],
            }, self.args.runs, self.args.warmup)
            macs = self.manifest["macs"]["per_exit"][k - 1]
            mono = stats["monolithic"]["median_ms"]
            rows.append({"exit": k, "macs": macs, **stats,
                         "ratio": stats["staged"]["median_ms"] / mono,
                         "invokes_ratio": stats["stage_invokes"]["median_ms"] / mono,
                         "gmacs_per_s": _gmacs(macs, stats["monolithic"]["median_ms"])})
            progress.step(f"exit {k}: staged/monolithic {rows[-1]['ratio']:.3f}")
        return rows

    def score(self, files):
        name, full = f"score_{self.codec}", f"exit_{self.k}"
        return {"codec": self.codec, "model": name, "median_ms": files[name]["median_ms"],
                "full_pass_model": full, "full_pass_median_ms": files[full]["median_ms"],
                "ratio": files[name]["median_ms"] / files[full]["median_ms"]}

    def _tiles(self, image):
        rows, cols = (tiling.layout(n, self.runner.tile, self.runner.overlap)
                      for n in image.shape[:2])
        return len(rows.origins) * len(cols.origins)

    def early_exit(self, progress):
        per_exit = self.manifest["macs"]["per_exit"]
        runners = {"": self.runner, **({"baseline_": self.base} if self.base else {})}
        image = self.images[0][1]
        for runner in runners.values():  # warm-up (opens the models the set needs first)
            runner(image), runner(image, exit=self.k)
        records = []
        for name, image in self.images:
            times = {f"{p}{mode}": [] for p in runners for mode in ("early_ms", "always_last_ms")}
            exits = {}
            for _ in range(self.args.image_repeats):
                for prefix, runner in runners.items():  # interleaved, so both see one load
                    result = runner(image)
                    exits[prefix] = result
                    times[f"{prefix}early_ms"].append(result.ms)
                    times[f"{prefix}always_last_ms"].append(runner(image, exit=self.k).ms)
            result = exits[""]
            tiles = self._tiles(image)
            records.append({"image": name, "shape": list(image.shape), "tiles": tiles,
                            "exit": result.exit, "scores": result.scores[0],
                            "gains": result.gains,
                            **{key: float(np.median(t)) for key, t in times.items()},
                            # exit 0 runs no stage (the decision itself is in the ms)
                            "macs": tiles * per_exit[result.exit - 1] if result.exit else 0,
                            "always_last_macs": tiles * per_exit[-1]})
            if self.base:
                records[-1]["baseline_exit"] = exits["baseline_"].exit
            progress.step(f"{name}: exit {result.exit}, {records[-1]['early_ms']:.0f} ms vs "
                          f"{records[-1]['always_last_ms']:.0f} ms")
        mean = {key: float(np.mean([r[key] for r in records]))
                for key in records[0] if key.endswith(("_ms", "macs"))}
        histogram = {str(k): sum(r["exit"] == k for r in records) for k in range(0, self.k + 1)}
        taken = [k for k, n in histogram.items() if n]
        out = {"source": self.args.images or self.args.mixed or "generated",
               "count": len(records),
                "threshold": self.runner.threshold, "decision": self.runner.decision,
                "gain_rule": self.runner.gain and {k: self.runner.gain[k]
                                                   for k in ("margin", "tolerance")},
                "mean_ms": mean["early_ms"], "always_last_mean_ms": mean["always_last_ms"],
                "ratio": mean["early_ms"] / mean["always_last_ms"],
                "histogram": histogram,
                # every image at one exit: the saving describes that exit, not routing
                "one_exit": len(taken) == 1 and len(records) > 1,
                "macs_per_image": mean["macs"], "always_last_macs_per_image":
                mean["always_last_macs"], "macs_ratio": mean["macs"] / mean["always_last_macs"],
                "images": records}
        if self.base:
            out["baseline"] = {
                "folder": self.args.baseline, "mean_ms": mean["baseline_early_ms"],
                "always_last_mean_ms": mean["baseline_always_last_ms"],
                "early_ratio": mean["early_ms"] / mean["baseline_early_ms"],
                "always_last_ratio": mean["always_last_ms"] / mean["baseline_always_last_ms"],
                "same_exits": sum(r["exit"] == r["baseline_exit"] for r in records)}
        return out

    def energy(self, early, progress):
        proxy = {"macs_per_image": early["macs_per_image"],
                 "always_last_macs_per_image": early["always_last_macs_per_image"]}
        if self.args.energy_seconds <= 0:
            return {"available": False, "reason": "--energy_seconds 0",
                    "proxy": proxy}
        meter = EnergyMeter(self.args.power_supply)
        if meter.folder is None:
            return {"available": False, "reason": f"no battery under {self.args.power_supply}",
                    "proxy": proxy}
        out = {"available": True, "proxy": proxy}
        for mode, exit_ in (("early_exit", None), ("always_last", self.k)):
            meter.start()
            start, count = time.perf_counter(), 0
            while time.perf_counter() - start < self.args.energy_seconds:
                for _, image in self.images:
                    self.runner(image, exit=exit_)
                    count += 1
            reading = meter.stop()
            reading.update(images=count, seconds=time.perf_counter() - start,
                           joules_per_image=reading["joules"] and reading["joules"] / count)
            out[mode] = reading
            out["available"] = out["available"] and reading["joules"] is not None
            progress.step(f"energy {mode}: {reading['joules_per_image'] or reading['reason']}")
        if out["available"]:
            out["ratio"] = (out["early_exit"]["joules_per_image"]
                            / out["always_last"]["joules_per_image"])
        else:
            out["reason"] = "; ".join(r["reason"] for r in (out["early_exit"], out["always_last"])
                                      if r["reason"])
        return out

    def run(self):
        progress = Progress(1 + self.k + len(self.images) + len(self.op_profile)
                            + (2 if self.args.energy_seconds > 0 else 0))
        files, baseline = self.model_files()
        progress.step(f"{len(files)} model files timed")
        exits = self.staged_vs_monolithic(progress)
        early = self.early_exit(progress)
        energy = self.energy(early, progress)
        profiles = {}
        for name in self.op_profile:
            profiles[name] = op_profile.profile(
                checked_path(self.folder, self.manifest, name), self.args.threads,
                self.args.runs, self.args.warmup, self.args.xnnpack)
            progress.step(f"op profile of {name}: {len(profiles[name]['slowest'])} slowest ops")
        progress.close()
        full = f"exit_{self.k}"
        rss, rss_source = peak_rss_mb()
        result = {
            "tool": "export.benchmark", "command": self.command,
            "export": {"folder": self.folder, "quantize": self.manifest["quantize"],
                       "tile": self.manifest["tile"], "num_exits": self.k,
                       "codec": self.codec},
            "settings": {"threads": self.args.threads, "xnnpack": self.args.xnnpack,
                         "delegate": self.args.delegate, "runs": self.args.runs,
                         "warmup": self.args.warmup, "image_repeats": self.args.image_repeats},
            "host": _host(),
            "models": files, "exits": exits, "score": self.score(files),
            "early_exit": early, "energy": energy,
            "memory": {"peak_rss_mb": rss, "source": rss_source,
                       "what": "this benchmark process (every model file open)"},
            "baseline": baseline and {"folder": self.args.baseline, "models": baseline,
                                      "early_exit": early.get("baseline")},
            "ops": {full: read_op_macs(checked_path(self.folder, self.manifest, full))},
            "op_profile": profiles,
        }
        result["targets"] = targets(result)
        return result


def targets(result):
    """The targets with the measured values (met: whether each holds; None for an
    early-exit saving measured with every image at one exit)."""
    worst = max(r["ratio"] for r in result["exits"])
    values = {"staged_over_monolithic": worst, "score_over_full_pass": result["score"]["ratio"],
              "early_exit_over_always_last": result["early_exit"]["ratio"]}
    limits = dict(TARGETS)
    for name, limit in TILE_TARGETS.get(result["export"]["tile"], {}).items():
        values[name] = result["models"][name[:-3]]["median_ms"]
        limits[name] = limit
    out = {name: {"value": v, "limit": limits[name], "met": v <= limits[name]}
           for name, v in values.items()}
    if result["early_exit"]["one_exit"]:
        out["early_exit_over_always_last"].update(
            met=None, flag="every image took one exit: not a routing figure")
    return out


def _host():
    try:
        from importlib.metadata import version
        litert = version("ai-edge-litert")
    except Exception:  # an unpackaged install (e.g. copied onto a device)
        litert = None
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpus": cpu_count(), "load_average_1min": (os.getloadavg()[0]
                                                       if hasattr(os, "getloadavg") else None),
            "python": platform.python_version(), "numpy": np.__version__,
            "ai_edge_litert": litert}


def _f(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(result):
    """A markdown summary of :meth:`Bench.run`'s result."""
    ex, s = result["export"], result["settings"]
    lines = [f"Export `{ex['folder']}` ({ex['quantize']}, tile {ex['tile']}), "
             f"{s['threads']} threads, XNNPACK {'on' if s['xnnpack'] else 'off'}"
             + (f", delegate {s['delegate']}" if s["delegate"] else "")
             + f"; {s['runs']} timed runs after {s['warmup']} warm-up.", "",
             "| model | min ms | median ms | p90 ms | GMAC | GMAC/s |", "|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        lines.append(f"| {name} | {_f(m['min_ms'])} | {_f(m['median_ms'])} | {_f(m['p90_ms'])} | "
                     f"{_f(m['macs'] / 1e9, 3)} | {_f(m['gmacs_per_s'])} |")
    lines += ["", "| exit | monolithic ms | stages 1..k ms | ratio | stage invokes alone ms | "
              "ratio |", "|---|---|---|---|---|---|"]
    for r in result["exits"]:
        lines.append(f"| {r['exit']} | {_f(r['monolithic']['median_ms'])} | "
                     f"{_f(r['staged']['median_ms'])} | {r['ratio']:.3f} | "
                     f"{_f(r['stage_invokes']['median_ms'])} | {r['invokes_ratio']:.3f} |")
    sc, ee = result["score"], result["early_exit"]
    hist = ", ".join(f"exit {k}: {n}" for k, n in ee["histogram"].items())
    lines += ["", f"Quality score ({sc['model']}): {_f(sc['median_ms'], 2)} ms = "
              f"{100 * sc['ratio']:.1f} % of a full {sc['full_pass_model']} pass.", "",
              f"Early exit on {ee['count']} images ({ee['source']}, "
              + (f"gain decision, margin {ee['gain_rule']['margin']:.2f} dB"
                 if ee["decision"] == "gain" else f"τ = {ee['threshold']:.3f}") + "): "
              f"{_f(ee['mean_ms'])} ms per image vs {_f(ee['always_last_mean_ms'])} ms always "
              f"at the last exit (ratio {ee['ratio']:.3f}); {_f(ee['macs_per_image'] / 1e9, 3)} vs "
              f"{_f(ee['always_last_macs_per_image'] / 1e9, 3)} GMAC per image "
              f"(ratio {ee['macs_ratio']:.3f}); exits: {hist}."
              + (" **Flagged: every image took one exit, so this saving is that exit's "
                 "cost, not routing.**" if ee["one_exit"] else ""), ""]
    en = result["energy"]
    lines.append("Energy: " + (
        f"{en['early_exit']['joules_per_image']:.3f} J per image with early exit vs "
        f"{en['always_last']['joules_per_image']:.3f} J at the last exit "
        f"({en['early_exit']['method']})" if en["available"] else
        f"not available ({en['reason']}); proxy: MACs per image above."))
    for profile in result["op_profile"].values():
        lines += ["", "Op-level profile: " + op_profile.markdown(profile).rstrip("\n")]
    if result.get("baseline"):
        lines += ["", *baseline_markdown(result["baseline"])]
    mem = result["memory"]
    lines += ["", f"Peak RSS: {_f(mem['peak_rss_mb'])} MiB ({mem['source']}; {mem['what']}).",
              "", "| target | value | limit | met |", "|---|---|---|---|"]
    for name, t in result["targets"].items():
        met = {True: "yes", False: "no", None: f"flagged ({t.get('flag')})"}[t["met"]]
        lines.append(f"| {name} | {t['value']:.3f} | ≤ {t['limit']} | {met} |")
    return "\n".join(lines) + "\n"


def baseline_markdown(baseline):
    """Lines comparing the export with ``--baseline`` (medians of the same rounds)."""
    lines = [f"Against the baseline `{baseline['folder']}` (timed in the same rounds; "
             "ratio = new / baseline medians):", "",
             "| model | new ms | baseline ms | ratio |", "|---|---|---|---|"]
    for name, m in baseline["models"].items():
        lines.append(f"| {name} | {_f(m['median_ms'])} | {_f(m['baseline_median_ms'])} | "
                     f"{m['ratio']:.3f} |")
    ee = baseline["early_exit"]
    lines += ["", f"Image set through both runners: early exit {_f(ee['mean_ms'])} ms per "
              f"image with the baseline (new / baseline {ee['early_ratio']:.3f}), always the "
              f"last exit {_f(ee['always_last_mean_ms'])} ms (ratio "
              f"{ee['always_last_ratio']:.3f}); same exit for {ee['same_exits']} images."]
    return lines


def logs_result(folder, manifest=None):
    """benchmark_model logs in ``folder`` → JSON: per configuration the models' times,
    and with a manifest the per-exit staged/monolithic ratios and the score ratio."""
    parsed = benchmark_model.parse_logs(folder)
    out = {"tool": "benchmark_model", "logs": folder, "configs": {},
           "rejected": [{"log": r["log"], "model": r["model"], "reason": r["reason"]}
                        for r in parsed["rejected"]]}
    for config, models in parsed["configs"].items():
        entry = {"models": models}
        if manifest is not None:
            entry["exits"] = exit_rows(models, manifest, key="mean_ms")
            full = models.get(f"exit_{manifest['num_exits']}")
            entry["score"] = {c: models[f"score_{c}"]["mean_ms"] / full["mean_ms"]
                              for c in manifest["codecs"] if full and f"score_{c}" in models}
        out["configs"][config] = entry
    return out


def logs_markdown(result):
    lines = [f"benchmark_model logs in `{result['logs']}` (times in ms; mean = the tool's "
             "'Inference (avg)')."]
    for config, entry in result["configs"].items():
        lines += ["", f"**{config}**", "", "| model | mean | median | min | p95 |",
                  "|---|---|---|---|---|"]
        for name, r in sorted(entry["models"].items()):
            lines.append(f"| {name} | {_f(r.get('mean_ms'), 2)} | {_f(r.get('median_ms'), 2)} | "
                         f"{_f(r.get('min_ms'), 2)} | {_f(r.get('p95_ms'), 2)} |")
        for r in entry.get("exits", []):
            lines.append(f"\nexit {r['exit']}: stages 1..k / monolithic = {r['ratio']:.3f}")
    if result["rejected"]:
        lines += ["", "Rejected (not reported):"]
        lines += [f"- {r['log']}: {r['reason']}" for r in result["rejected"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        if args.parse_logs:
            if not os.path.isdir(args.parse_logs):
                return fail(f"--parse_logs {args.parse_logs}: no such folder")
            result = logs_result(args.parse_logs,
                                 read_manifest(args.models) if args.models else None)
            text = logs_markdown(result)
        else:
            if not args.models:
                return fail("--models is required (an export folder written by "
                            "python -m export.tflite)")
            if args.print_commands:
                manifest = read_manifest(args.models)
                cfg = benchmark_model.configs((1, args.threads) if args.threads > 1 else (1,),
                                              args.xnnpack, not args.xnnpack, args.gpu)
                print("\n".join(benchmark_model.command_lines(
                    manifest, args.device_dir or args.models, args.log_dir, args.binary, cfg,
                    args.runs, args.warmup, args.profile)))
                return 0
            if args.runs < 1 or args.warmup < 0 or args.image_repeats < 1:
                return fail("--runs and --image_repeats must be ≥ 1, --warmup ≥ 0")
            for flag in ("images", "mixed", "baseline"):
                if getattr(args, flag) and not os.path.isdir(getattr(args, flag)):
                    return fail(f"--{flag} {getattr(args, flag)}: no such folder")
            if args.images and args.mixed:
                return fail("--images and --mixed are two image sets: give one")
            if args.mixed_images < 1:
                return fail("--mixed_images must be ≥ 1")
            if args.delegate and not os.path.isfile(args.delegate):
                return fail(f"--delegate {args.delegate}: no such file")
            result = Bench(args, "python -m export.benchmark " + shlex.join(argv)).run()
            text = markdown(result)
    except (ManifestError, ModelError, ImageError, ImportError, OSError, ValueError) as e:
        return fail(str(e))
    print(text, end="")
    if args.json:
        write_text(args.json, json.dumps(result, indent=1) + "\n")
    if args.markdown:
        write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
