"""Measuring an RBQE model on compressed images (behind ``python -m rbqe_tf.evaluate``).

Every image at every level runs once through all stages; each exit's output (cropped,
rounded to uint8) gets the full-reference metrics and the blind score, and the run
records each stage's time and each score's time. Early exit at any τ is then read off
these records (:func:`summarize`), so it is measured on the same run as always-exit-E.
Conventions and the JSON schema: docs/evaluation.md.
"""
import dataclasses
import importlib.metadata
import os
import platform
import time
from collections import defaultdict

import cv2
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from rbqe_tf import iqa, metrics
from rbqe_tf import gain
from rbqe_tf.calibration import (RULES, best_index, calibrate_gain, choose_exits, gain_outcomes,
                                 knee_index, max_loss_index, sweep)
from rbqe_tf.image_io import ImageError
from rbqe_tf.levels import BLOCK_SIZE, check_codec, is_light
from rbqe_tf.macs import macs_per_stage
from rbqe_tf.metrics import to_uint8
from rbqe_tf.model import iterate_stages
from rbqe_tf.tiling import pad_to_multiple

ORACLE_TOLERANCE_DB = 0.05
"""The oracle exit is the earliest exit within this many dB of the image's best exit."""
PSNR_CAP_DB = 100.0
"""PSNR and PSNR-B of (near-)identical images are capped here, so that means stay finite."""


@dataclasses.dataclass
class Record:
    """Measurements of one image at one level; per-exit arrays have E entries."""

    name: str
    level: int
    input_psnr: float
    input_ssim: float
    input_psnr_b: float
    input_score: float
    exit_psnr: np.ndarray
    exit_ssim: np.ndarray
    exit_psnr_b: np.ndarray
    exit_score: np.ndarray  # the last exit's is measured for score fidelity only
    stage_ms: np.ndarray
    score_ms: np.ndarray  # E−1: the scores the exit rule computes
    stage_gmacs: np.ndarray
    predicted_gain: np.ndarray = None  # [E] dB, with a gain predictor
    gate_gmacs: float = 0.0  # the predictor's cost
    gt_jpeg_derived: bool = False  # the ground truth itself was JPEG-coded (gain.jpeg_derived)
    predicted_gate: float = None  # the gate head's best predicted gain (dB), with a predictor


def full_reference(gt, image, block_size):
    """(PSNR, SSIM, PSNR-B) of uint8 ``image`` against ``gt``, PSNRs capped at 100 dB."""
    return (min(metrics.psnr(gt, image), PSNR_CAP_DB), metrics.ssim(gt, image),
            min(metrics.psnr_b(gt, image, block_size), PSNR_CAP_DB))


class Evaluator:
    """Runs a model's stages on compressed Y planes and measures every exit."""

    def __init__(self, model, codec, predictor=None):
        self.codec = check_codec(codec)
        self.predictor = predictor
        self.block_size = BLOCK_SIZE[codec]
        self.model = model
        self.multiple = model.rbqe_config.size_multiple
        self._stages = [tf.function(s, input_signature=[[
            tf.TensorSpec([None, None, None, t.shape[-1]], t.dtype) for t in s.inputs]])
            for s in model.stage_models()]  # traced once for every size
        self._stage_gmacs = {}  # padded (H, W) → per-stage GMACs

    def run(self, y):
        """All exits of uint8 ``y`` [H, W] → (outputs uint8, scores, stage ms, score ms).

        Mirror-pads like :class:`rbqe_tf.enhancer.Enhancer`; stage k's time covers the
        stage and fetching its cropped exit; every exit is scored (timed separately).
        """
        h, w = y.shape
        padded = tf.constant(pad_to_multiple(y / 255.0, self.multiple)[None, :, :, None],
                             tf.float32)
        outputs, scores, stage_ms, score_ms = [], [], [], []
        start = time.perf_counter()
        for out in iterate_stages(self._stages, padded):
            out = out[:, :h, :w, :]
            outputs.append(out.numpy()[0, :, :, 0])
            scored = time.perf_counter()
            scores.append(float(iqa.quality_score(out, self.codec)[0]))
            stage_ms.append((scored - start) * 1e3)
            start = time.perf_counter()
            score_ms.append((start - scored) * 1e3)
        return [to_uint8(o) for o in outputs], scores, stage_ms, score_ms

    def measure(self, name, level, gt, decoded, gt_jpeg_derived=False):
        """A :class:`Record` for one decoded image (``gt_jpeg_derived``: whether ``gt`` was
        itself JPEG-coded, :func:`rbqe_tf.gain.jpeg_derived`). The first image of each padded size
        runs twice: an untimed warm-up, then the measured run."""
        size = tuple(s + -s % self.multiple for s in decoded.shape)
        if size not in self._stage_gmacs:
            self.run(decoded)
            self._stage_gmacs[size] = np.array(macs_per_stage(self.model, *size)) / 1e9
        outputs, scores, stage_ms, score_ms = self.run(decoded)
        exits = np.array([full_reference(gt, o, self.block_size) for o in outputs])
        inputs = full_reference(gt, decoded, self.block_size)
        input_score = float(iqa.quality_score(decoded[None, :, :, None] / 255.0, self.codec)[0])
        predicted = None if self.predictor is None else self.predictor(decoded)
        if self.predictor is not None and predicted is None:  # no whole 8×8 block: exit 0
            predicted = np.full(len(outputs), -np.inf), -np.inf
        predicted, gate = (None, None) if predicted is None else predicted
        return Record(name, level, *inputs, input_score, exits[:, 0], exits[:, 1],
                      exits[:, 2], np.array(scores), np.array(stage_ms),
                      np.array(score_ms[:-1]), self._stage_gmacs[size], predicted,
                      gain.gate_gmacs(*decoded.shape), gt_jpeg_derived, gate)


def measure(model, sources, codec, progress=True, predictor=None):
    """Measures every source at every level → (records, skipped one-line reasons)."""
    evaluator = Evaluator(model, codec, predictor)
    records, skipped = [], []
    for source in tqdm(sources, unit="image", disable=not progress):
        try:
            gt, decoded = source.load()
        except ImageError as e:
            skipped.append(str(e))
            continue
        derived = gain.jpeg_derived(gt)  # once per ground truth, not per level
        records += [evaluator.measure(source.name, level, gt, image, derived)
                    for level, image in decoded.items()]
    return records, skipped


@dataclasses.dataclass
class Arrays:
    """Records stacked: [N] per-image fields and [N, E] per-exit ones."""

    input_psnr: np.ndarray
    input_ssim: np.ndarray
    input_psnr_b: np.ndarray
    exit_psnr: np.ndarray
    exit_ssim: np.ndarray
    exit_psnr_b: np.ndarray
    scores: np.ndarray  # [N, E−1]: the scores the exit rule sees
    exit_ms: np.ndarray  # time to reach exit k, stages only (cumulative)
    score_ms: np.ndarray  # [N, E]: time of the scores computed before stopping at exit k
    exit_gmacs: np.ndarray  # cost of stages 1..k

    @classmethod
    def stack(cls, records):
        def get(name):
            return np.array([getattr(r, name) for r in records], np.float64)

        score_ms = np.cumsum(get("score_ms"), 1)
        return cls(get("input_psnr"), get("input_ssim"), get("input_psnr_b"),
                   get("exit_psnr"), get("exit_ssim"), get("exit_psnr_b"),
                   get("exit_score")[:, :-1], np.cumsum(get("stage_ms"), 1),
                   np.concatenate([score_ms, score_ms[:, -1:]], 1),
                   np.cumsum(get("stage_gmacs"), 1))


def oracle_exits(exit_psnr, tolerance=ORACLE_TOLERANCE_DB):
    """1-based earliest exit within ``tolerance`` dB of each row's best exit."""
    exit_psnr = np.asarray(exit_psnr)
    return np.argmax(exit_psnr >= exit_psnr.max(1, keepdims=True) - tolerance, 1) + 1


def figures(records, threshold):
    """The per-group figures of docs/evaluation.md for ``records`` at ``threshold``."""
    a = Arrays.stack(records)
    n, num_exits = a.exit_psnr.shape
    rows = np.arange(n)
    k = choose_exits(a.scores, threshold)
    chosen = rows, k - 1

    def mean(x):
        return float(np.mean(x))

    def means(x):
        return [float(v) for v in np.mean(x, 0)]

    def counts(exits):
        return [int(c) for c in np.bincount(exits, minlength=num_exits + 1)[1:]]

    return {
        "num_images": n,
        "input_psnr": mean(a.input_psnr),
        "input_ssim": mean(a.input_ssim),
        "input_psnr_b": mean(a.input_psnr_b),
        "exit_psnr": means(a.exit_psnr),
        "exit_ssim": means(a.exit_ssim),
        "exit_psnr_b": means(a.exit_psnr_b),
        "exit_delta_psnr": means(a.exit_psnr - a.input_psnr[:, None]),
        "exit_gmacs": means(a.exit_gmacs),
        "exit_ms": means(a.exit_ms),
        "early_exit_psnr": mean(a.exit_psnr[chosen]),
        "early_exit_ssim": mean(a.exit_ssim[chosen]),
        "early_exit_psnr_b": mean(a.exit_psnr_b[chosen]),
        "early_exit_delta_psnr": mean(a.exit_psnr[chosen] - a.input_psnr),
        "early_exit_mean_exit": mean(k),
        "exit_histogram": counts(k),
        "early_exit_mean_gmacs": mean(a.exit_gmacs[chosen]),
        "full_mean_gmacs": mean(a.exit_gmacs[:, -1]),
        "early_exit_ms": mean(a.exit_ms[chosen] + a.score_ms[chosen]),
        "full_ms": mean(a.exit_ms[:, -1]),
        "oracle_histogram": counts(oracle_exits(a.exit_psnr)),
        "oracle_match_rate": mean(k == oracle_exits(a.exit_psnr)),
    }


def gain_figures(records, rule, codec="jpeg"):
    """The gain decision's figures for ``records`` (all with predicted gains) under
    ``rule`` {"margin", "tolerance"}, beside the per-image oracle (best of exits 0..E,
    the cheapest such exit) and the predictor's error."""
    a = Arrays.stack(records)
    predicted = np.array([r.predicted_gain for r in records], np.float64)
    gate = np.array([r.gate_gmacs for r in records])
    k, psnr, gmacs = gain_outcomes(predicted, rule["margin"], rule["tolerance"], a.exit_psnr,
                                   a.input_psnr, a.exit_gmacs, gate, gate_gains(records))
    with_input = np.concatenate([a.input_psnr[:, None], a.exit_psnr], 1)
    oracle = np.argmax(with_input >= with_input.max(1, keepdims=True), 1)
    rows = np.arange(len(k))
    oracle_gmacs = np.concatenate([np.zeros((len(k), 1)), a.exit_gmacs], 1)[rows, oracle] + gate
    measured = np.maximum(a.exit_psnr - a.input_psnr[:, None], gain.LABEL_FLOOR_DB)
    finite = np.isfinite(predicted).all(1)
    ok = np.array([is_measurable(r, codec) for r in records])
    delta = psnr - a.input_psnr
    return {"margin": rule["margin"], "tolerance": rule["tolerance"],
            "delta_psnr": float(np.mean(delta)),
            "worst_delta_psnr": float(np.min(delta)),
            "num_measurable": int(ok.sum()),
            "measurable_delta_psnr": float(np.mean(delta[ok])) if ok.any() else None,
            "measurable_worst_delta_psnr": float(np.min(delta[ok])) if ok.any() else None,
            "mean_gmacs": float(gmacs.mean()), "mean_exit": float(k.mean()),
            "exit_histogram": [int(c) for c in np.bincount(k, minlength=a.exit_psnr.shape[1] + 1)],
            "oracle_delta_psnr": float(np.mean(with_input[rows, oracle] - a.input_psnr)),
            "oracle_gmacs": float(oracle_gmacs.mean()),
            "oracle_histogram": [int(c) for c in np.bincount(oracle,
                                                             minlength=a.exit_psnr.shape[1] + 1)],
            "predictor_mae_db": float(np.abs(predicted[finite] - measured[finite]).mean())
            if finite.any() else None,
            "predictor_spearman": spearman(predicted[finite].ravel(), measured[finite].ravel())
            if finite.sum() > 1 else None}


def summarize(records, threshold, gain_rule=None, codec="jpeg"):
    """``{"levels": {"<level>": figures}, "overall": figures}`` at ``threshold``; with
    ``gain_rule`` and predicted gains, each figures dict also has ``gain_decision``."""
    levels = sorted({r.level for r in records})

    def group(rs):
        f = figures(rs, threshold)
        if gain_rule is not None and rs[0].predicted_gain is not None:
            f["gain_decision"] = gain_figures(rs, gain_rule, codec)
        return f

    return {"levels": {str(lv): group([r for r in records if r.level == lv]) for lv in levels},
            "overall": group(records)}


def is_measurable(record, codec):
    """False for a light input of a JPEG-derived ground truth (``gt_jpeg_derived``): against
    it, an exit that removes the original coding's artefacts counts as a loss."""
    return not (record.gt_jpeg_derived and is_light(record.level, codec))


def calibrate_gain_rule(records, codec):
    """The calibrated gain rule over the measurable ``records``
    (:func:`rbqe_tf.calibration.calibrate_gain`, :func:`is_measurable`)."""
    a = Arrays.stack(records)
    return calibrate_gain(np.array([r.predicted_gain for r in records], np.float64),
                          a.exit_psnr, a.input_psnr, a.exit_gmacs,
                          np.array([r.gate_gmacs for r in records]),
                          np.array([is_light(r.level, codec) for r in records]),
                          valid=np.array([is_measurable(r, codec) for r in records]),
                          gate=gate_gains(records))


def gate_gains(records):
    """The gate head's best predicted gain per record (the gain head's best where a record
    has none: one-head predictors)."""
    return np.array([np.max(r.predicted_gain) if r.predicted_gate is None else r.predicted_gate
                     for r in records], np.float64)


def spearman(a, b):
    """Spearman rank correlation (average ranks for ties); None if either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return None if denominator == 0 else float((ra * rb).sum() / denominator)


def _ranks(x):
    x = np.asarray(x, np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each value
    return mean_rank[inverse]


def score_fidelity(records, worst=5):
    """Spearman ρ between the blind score and PSNR, per image across levels (the decoded
    inputs; images with ≥ 3 levels) and per image × level across exits (the outputs)."""
    by_name = defaultdict(list)
    for r in records:
        by_name[r.name].append(r)
    across_levels = [({"image": name}, spearman([r.input_score for r in rs],
                                                [r.input_psnr for r in rs]))
                     for name, rs in by_name.items() if len(rs) >= 3]
    across_exits = [({"image": r.name, "level": r.level}, spearman(r.exit_score, r.exit_psnr))
                    for r in records]
    return {"across_levels": _rho_summary(across_levels, worst),
            "across_exits": _rho_summary(across_exits, worst)}


def _rho_summary(items, worst):
    defined = sorted([(rho, key) for key, rho in items if rho is not None],
                     key=lambda t: t[0])
    return {"mean_rho": float(np.mean([rho for rho, _ in defined])) if defined else None,
            "num": len(defined),
            "num_undefined": len(items) - len(defined),
            "worst": [{**key, "rho": rho} for rho, key in defined[:worst]]}


def calibrate(records, max_loss_db):
    """The τ sweep over all ``records`` with the knee, best and max-loss choices (JSON-ready);
    ``max_loss_db`` ≥ 0."""
    a = Arrays.stack(records)
    s = sweep(a.scores, a.exit_psnr, a.input_psnr, a.exit_gmacs)
    full = s.point(-1)  # the largest τ: every image takes the last exit
    within = max_loss_index(s.mean_gmacs, s.mean_psnr, full["mean_psnr"], max_loss_db)
    return {"rules": RULES,
            "knee": s.point(knee_index(s.mean_gmacs, s.mean_delta_psnr)),
            "best": s.point(best_index(s.mean_gmacs, s.mean_delta_psnr)),
            "max_loss": {"max_loss_db": max_loss_db, **s.point(within)},
            "full_mean_psnr": full["mean_psnr"],
            "full_mean_gmacs": full["mean_gmacs"],
            "sweep": {name: [float(v) for v in values]
                      for name, values in dataclasses.asdict(s).items()}}


def environment():
    """Device and package versions, for the report's meta block."""
    try:
        package = importlib.metadata.version("rbqe_tf")
    except importlib.metadata.PackageNotFoundError:
        package = None
    return {"device": {"cpu_count": os.cpu_count(),
                       "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
            "versions": {"rbqe_tf": package, "python": platform.python_version(),
                         "tensorflow": tf.__version__, "keras": keras.__version__,
                         "numpy": np.__version__, "opencv": cv2.__version__}}
