"""Exports one RBQE model at one tile size: converts, verifies, writes the manifest.

An :class:`Exporter` traces its graphs once and caches compressed patches, so several
quantization modes can be exported from one instance (the tests do).
"""
import importlib.metadata
import os
import time

import keras
import numpy as np
import tensorflow as tf

from rbqe_tf.calibration import resolve_gain_rule, resolve_threshold
from rbqe_tf.conversion import verify
from rbqe_tf.conversion.convert import convert
from rbqe_tf.conversion.graphs import fixed_tile_model, model_graphs, release_memory, score_graph
from rbqe_tf.conversion.optimize import optimize
from rbqe_tf.conversion.representative import compressed_patches, image_crops, ramp, stage_inputs
from rbqe_tf.conversion.retile import retile
from rbqe_tf.files import write_bytes
from rbqe_tf.gain import load_predictor, predictor_path
from rbqe_tf.levels import BLOCK_SIZE, CODECS, DEFAULT_LEVELS, PUBLISHED_THRESHOLDS
from rbqe_tf.litert.flatbuffer import gpu_problems, op_counts
from rbqe_tf.litert.interpreter import make_interpreter, open_model
from rbqe_tf.litert.manifest import (INT8_MODES, MANIFEST, read_manifest, sha256_file,
                                     tensor_entries, write_manifest)
from rbqe_tf.macs import macs_per_exit, macs_per_stage


class ExportError(Exception):
    """An export that did not pass its checks (no manifest is written)."""


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def exit_thresholds(codecs, weights=None):
    """codec → (τ, source): calibrated beside ``weights`` ("calibrated") or the paper's."""
    return {c: resolve_threshold(c, weights) if weights else (PUBLISHED_THRESHOLDS[c], "default")
            for c in codecs}


class _OneExitFileOpen(dict):
    """Models by file name, opened on first use; opening an exit file closes the exit
    file opened before. Each open file holds XNNPACK's buffers (over 1 GB for the five
    exit files at 512² int8), and the checks need one exit file at a time, beside the
    stages of the chain."""

    def __init__(self, opener):
        super().__init__()
        self._open = opener

    def __missing__(self, name):
        if name.startswith("exit_"):
            for other in [n for n in self if n.startswith("exit_")]:
                del self[other]
        self[name] = self._open(name)
        return self[name]


class Exporter:
    """Graphs of ``model`` at ``tile``×``tile`` for the score models of ``codecs``.

    ``weights``: the model's .keras path, recorded in the manifest; the exit thresholds
    are the ones calibrated beside it (``rbqe_tf.calibration``), else the paper's.
    ``graphs``: exit/stage graphs to export instead of ``model``'s (the fake-quantized
    graphs of a QAT checkpoint, :func:`rbqe_tf.conversion.graphs.qat_graphs`; they are then the
    float reference of every check); ``source``: what they came from, for the manifest.
    ``calib_tile``: calibrate int8 files at this smaller tile (a divisor of ``tile``)
    and re-shape them to ``tile`` (:mod:`rbqe_tf.conversion.retile`); the checks run at ``tile``.
    """

    def __init__(self, model, tile, codecs=CODECS, weights=None, graphs=None, source=None,
                 calib_tile=None):
        multiple = model.rbqe_config.size_multiple
        if tile < multiple or tile % multiple:
            raise ValueError(f"tile must be a positive multiple of {multiple}, got {tile}")
        calib_tile = calib_tile or tile
        if calib_tile < multiple or calib_tile % multiple or tile % calib_tile:
            raise ValueError(f"calibration tile must be a multiple of {multiple} that divides "
                             f"the tile {tile}, got {calib_tile}")
        self.model, self.tile, self.codecs, self.weights = model, tile, tuple(codecs), weights
        self.calib_tile = calib_tile
        self.thresholds = exit_thresholds(self.codecs, weights)
        # The gain predictor (NumPy, float) travels as it is: int8 stages take the decision
        # the float model takes, before any stage runs.
        self.gain = {c: resolve_gain_rule(c, weights)[0] for c in self.codecs
                     if weights and c == "jpeg" and load_predictor(weights) is not None}
        self.num_exits = model.rbqe_config.num_exits
        self.graphs = graphs or model_graphs(fixed_tile_model(model, tile))
        self.source = source
        self.calib_graphs = (self.graphs if calib_tile == tile or graphs is not None
                             else model_graphs(fixed_tile_model(model, calib_tile)))
        self.graphs.update({f"score_{c}": score_graph(c, tile) for c in self.codecs})
        self.macs = {"per_exit": macs_per_exit(model, tile, tile),
                     "per_stage": macs_per_stage(model, tile, tile)}
        self._patches = {}
        release_memory()

    def patches(self, folder, limit, with_ramp=False, tile=None):
        """Cached (gt, compressed) centre crops (default: tile-sized) of ``folder`` at all
        codecs and levels."""
        tile = tile or self.tile
        key = (os.path.realpath(folder), limit, with_ramp, tile)
        if key not in self._patches:
            crops = image_crops(folder, tile, limit) + ([ramp(tile)] if with_ramp else [])
            self._patches[key] = compressed_patches(crops, CODECS)
        return self._patches[key]

    def _representative(self, name, comp):
        """Callable → calibration samples (at the calibration tile) as {input name:
        batch-1 array}."""
        graph = self.calib_graphs[name]
        if name.startswith("exit_"):
            return lambda: ({"y": y[None]} for y in comp)
        return lambda: (dict(zip(graph.input_names, inputs)) for inputs in
                        stage_inputs(self.calib_graphs, int(name.split("_")[1]), comp))

    def _convert_all(self, out, mode, calib, log):
        files = {}
        for name, graph in self.graphs.items():
            file_mode = "fp32" if name.startswith("score_") else mode
            calibrated = calib is not None and file_mode in INT8_MODES
            log(f"{name}.tflite: converting ({file_mode}"
                + (f", calibrating on {len(calib)} patches" if calibrated else "") + ")…")
            start = time.perf_counter()
            if calibrated:
                data = retile(convert(self.calib_graphs[name], file_mode,
                                      self._representative(name, calib)),
                              self.tile // self.calib_tile)
            else:
                data = convert(graph, file_mode, None)
            release_memory()
            rewrites = None
            if not name.startswith("score_"):
                data, rewrites = optimize(data)
            seconds = time.perf_counter() - start
            path = os.path.join(out, f"{name}.tflite")
            write_bytes(path, data)
            interpreter = make_interpreter(path, 1, xnnpack=False, allocate=False)
            signature = interpreter.get_signature_runner()
            names = {d["name"]: logical for details in (signature.get_input_details(),
                                                        signature.get_output_details())
                     for logical, d in details.items()}
            problems = gpu_problems(data)
            files[name] = {
                "path": f"{name}.tflite", "sha256": sha256_file(path), "bytes": len(data),
                "quantize": file_mode, "convert_seconds": round(seconds, 2),
                "rewrites": rewrites,
                "inputs": tensor_entries(interpreter.get_input_details(), names),
                "outputs": tensor_entries(interpreter.get_output_details(), names),
                "ops": op_counts(data), "gpu_compatible": not problems,
                "gpu_problems": problems}
            log(f"{name}.tflite: {len(data) / 1024:.1f} KiB in {seconds:.1f} s, "
                f"ops {sum(files[name]['ops'].values())}"
                + ("" if not problems else f", not GPU-compatible ({len(problems)} issues)"))
        return files

    def _check_int8_range(self, files, failures):
        """The int8 input must hold all of [0, 1] (else bright/dark pixels clip)."""
        for name, entry in files.items():
            y = next((i for i in entry["inputs"] if i["name"] == "y"), None)
            q = y and y["quantization"]
            if q:
                low = (-128 - q["zero_point"]) * q["scale"]
                high = (127 - q["zero_point"]) * q["scale"]
                if low > 1e-6 or high < 1 - 1e-6:
                    failures.append(f"{name}: int8 input range [{low:.3f}, {high:.3f}] "
                                    "does not cover [0, 1]")

    def _check_integer_ops(self, files, failures):
        """Fake-quantized graphs: every op int8 (a tensor without a range would have
        left float ops between QUANTIZE/DEQUANTIZE pairs)."""
        for name, entry in files.items():
            if not self.graphs.get(name, None) or not self.graphs[name].fake_quant:
                continue
            float_io = entry["quantize"] == "int8_full_fp32_io"
            allowed = {"QUANTIZE": len(entry["inputs"]) if float_io else 0,
                       "DEQUANTIZE": len(entry["outputs"]) if float_io else 0}
            extra = {op: n for op, n in entry["ops"].items() if n > allowed.get(op, n)}
            if extra:
                failures.append(f"{name}: float ops left in the int8 model: {extra}")

    def export(self, out, mode, calib, val, threads=2, log=print):
        """Writes all files and, if every check passes, ``manifest.json`` → the manifest.

        ``calib``/``val``: ``(folder, max images)`` of calibration/validation images.
        Raises :class:`ExportError` listing the failed checks.
        """
        os.makedirs(out, exist_ok=True)
        if os.path.exists(os.path.join(out, MANIFEST)):
            os.remove(os.path.join(out, MANIFEST))
        start = time.perf_counter()
        needs_calib = mode in INT8_MODES and not all(
            g.fake_quant for n, g in self.graphs.items() if not n.startswith("score_"))
        calib_comp = (self.patches(*calib, with_ramp=True, tile=self.calib_tile)[1]
                      if needs_calib else None)
        val_gt, val_comp = self.patches(*val)
        log(f"compressed patches: {0 if calib_comp is None else len(calib_comp)} calibration, "
            f"{len(val_comp)} validation ({time.perf_counter() - start:.0f} s)")
        files = self._convert_all(out, mode, calib_comp, log)
        manifest = self._manifest(mode, files, calib if needs_calib else None, val)
        for codec, rule in self.gain.items():
            name = f"gain_{codec}.npz"
            with open(predictor_path(self.weights), "rb") as f:
                write_bytes(os.path.join(out, name), f.read())
            manifest["gain"][codec] = {"path": name, "sha256": sha256_file(os.path.join(out, name)),
                                       **rule}
            log(f"gain decision ({codec}): {name}, margin {rule['margin']:.2f} dB, tolerance "
                f"{rule['tolerance']:.2f} dB (the runner's default decision)")
        log(f"checking {len(files)} files against the Keras model on {len(val_comp)} "
            "validation patches…")
        start = time.perf_counter()
        failures = [f"{name}: not GPU-compatible: {'; '.join(e['gpu_problems'])}"
                    for name, e in files.items() if not name.startswith("score_")
                    and not e["gpu_compatible"]]
        if mode == "int8_full_int8_io":
            self._check_int8_range(files, failures)
        if mode in INT8_MODES:
            self._check_integer_ops(files, failures)
        release_memory()
        manifest["verification"] = self._verify(out, manifest, val_gt, val_comp, threads, failures)
        log(f"checks: {time.perf_counter() - start:.0f} s")
        if failures:
            raise ExportError("export failed its checks:\n  " + "\n  ".join(failures))
        write_manifest(out, manifest)
        return read_manifest(out)

    def _verify(self, out, manifest, val_gt, val_comp, threads, failures):
        models = _OneExitFileOpen(lambda name: open_model(out, manifest, name, threads))
        stages = [models[f"stage_{k}"] for k in range(1, self.num_exits + 1)]
        checker = verify.Checker(manifest["quantize"])
        noise = np.random.default_rng(0).random((1, self.tile, self.tile, 1), np.float32)
        report = {"parity": verify.parity(self.graphs, models, stages, checker,
                                          [val_comp[:1], noise])}
        failures += checker.failures
        report["score_max_abs_dq"] = verify.score_parity(models, self.codecs, val_comp[:8],
                                                         failures)
        report.update(verify.accuracy(self.graphs, stages, val_gt, val_comp,
                                      exit_model=lambda k: models[f"exit_{k}"]))
        return report

    def _manifest(self, mode, files, calib, val):
        cfg = self.model.rbqe_config
        return {
            "quantize": mode, "tile": self.tile, "size_multiple": cfg.size_multiple,
            "num_exits": cfg.num_exits, "codecs": list(self.codecs),
            "thresholds": {c: tau for c, (tau, _) in self.thresholds.items()},
            "threshold_sources": {c: source for c, (_, source) in self.thresholds.items()},
            "gain": {},  # codec → gain predictor file and rule (docs/decision.md)
            "block_size": {c: BLOCK_SIZE[c] for c in self.codecs},
            "model": {"config": cfg.to_dict(), "weights": self.weights and {
                "path": os.path.basename(self.weights), "sha256": sha256_file(self.weights)}},
            "macs": self.macs,
            "qat": self.source,
            "calibration": calib and {"folder": os.path.abspath(calib[0]), "max_images": calib[1],
                                      "levels": DEFAULT_LEVELS, "ramp": True,
                                      "tile": self.calib_tile},
            "validation": {"folder": os.path.abspath(val[0]), "max_images": val[1]},
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "ai_edge_litert": _version("ai-edge-litert"),
                         "rbqe_tf": _version("rbqe_tf")},
            "files": files,
        }
