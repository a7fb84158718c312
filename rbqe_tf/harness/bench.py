"""One benchmark run of an export folder (what ``python -m export.benchmark`` prints):
per-file latency, staged vs monolithic, the score's cost, early exit on a mixed set,
memory, energy and the op profile; and benchmark_model logs read into the same kind of
result (docs/export.md, "The benchmark harness")."""
import os
import platform
import time

import numpy as np

from rbqe_tf import tiling
from rbqe_tf.harness import benchmark_model, op_profile
from rbqe_tf.harness.energy import EnergyMeter
from rbqe_tf.harness.images import folder_set, generated_set, mixed_set
from rbqe_tf.harness.latency import Progress, cpu_count, peak_rss_mb, time_round_robin
from rbqe_tf.harness.op_macs import read_op_macs
from rbqe_tf.image_io import ImageError
from rbqe_tf.litert.interpreter import Value
from rbqe_tf.litert.manifest import ManifestError, checked_path, read_manifest
from rbqe_tf.litert.runner import Runner
from rbqe_tf.litert.stages import iterate_stages

# The targets of docs/benchmarks.md (int8, 2 threads, 512×512 on the development CPU);
# the millisecond ones apply at that tile only.
TARGETS = {"staged_over_monolithic": 1.05, "score_over_full_pass": 0.05,
           "early_exit_over_always_last": 0.5}
TILE_TARGETS = {512: {"exit_5_ms": 100.0, "exit_1_ms": 40.0}}


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
        """→ (stats per model, baseline comparison or None). Each file is timed in its own
        rounds, alternating with the baseline's file of the same name: one round over
        every file would start each invoke on caches the other files' buffers evicted
        (a 512² export holds hundreds of MB per file), which no user run does."""
        calls = {}
        for prefix, models in (("", self.models), ("baseline/", self.base_models)):
            rng = np.random.default_rng(0)
            for name, model in models.items():
                model.run(_random_feeds(model, rng))  # inputs stay set; invokes are timed
                calls[prefix + name] = model.interpreter.invoke
        stats = {}
        for name in self.models:
            group = [key for key in (name, "baseline/" + name) if key in calls]
            stats.update(time_round_robin({key: calls[key] for key in group},
                                          self.args.runs, self.args.warmup))
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


