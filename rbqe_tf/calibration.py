"""Exit-threshold calibration: the τ sweep, the knee, best and max-loss rules, the thresholds file.

NumPy and the standard library only, so that :func:`load_thresholds` is cheap to import.

Exit rule (the score rule of docs/method.md, "Decision"): after exits 1..E−1 stop at the
first k with score ≥ τ, else exit E. A sweep evaluates every distinct decision the
measured scores allow: τ = 0 (everything exits at 1), the midpoints between consecutive
distinct scores, and τ = 1.01 (> any score: everything exits at E). Per τ it gives the
mean PSNR, ΔPSNR and GMACs over all images × levels.

Rules:

- **knee** (Kneedle on the Pareto front): keep the sweep points no other point beats
  (cheaper or as cheap with more ΔPSNR); normalise their mean GMACs and mean ΔPSNR to
  [0, 1] between the cheapest and the most expensive front point; the knee is the front
  point farthest above the chord joining those two (largest normalised ΔPSNR − normalised
  GMACs). A front with no point above the chord (two points, or a straight or convex
  front) has no knee: the rule then takes the front's best-ΔPSNR point.
- **best**: the highest mean ΔPSNR of the sweep (ties: the cheapest, then the lowest τ),
  the front's last point: quality first, whatever it costs.
- **max_loss**: the cheapest τ whose mean PSNR ≥ mean always-exit-E PSNR − allowance
  (ties: higher PSNR, then lower τ).

Thresholds file: ``<weights without .keras>.thresholds.json`` beside the weights, one
entry per codec: ``{"jpeg": {"threshold": τ, "rule": ..., ...}, "hevc": {...}}``.
"""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from rbqe_tf.files import write_text
from rbqe_tf.gain import choose_exits as choose_gain_exits
from rbqe_tf.levels import PUBLISHED_THRESHOLDS

NEVER_EXIT_EARLY = 1.01
"""A threshold above every score (scores are in [0, 1]): all images take the last exit."""

RULES = {
    "knee": "Kneedle on the Pareto front of the tau sweep: the front point farthest above "
            "the chord from the cheapest to the most expensive front point, in [0, 1]-"
            "normalised mean GMACs and mean delta PSNR (best-delta-PSNR point if none "
            "lies above the chord)",
    "best": "the highest mean delta PSNR of the tau sweep (ties: the cheapest, then the lowest tau)",
    "max_loss": "the cheapest tau whose mean PSNR >= mean always-last-exit PSNR - max_loss_db",
}


def choose_exits(scores, threshold):
    """1-based exit per row of ``scores`` [N, E−1] (exits 1..E−1): first ≥ τ, else E."""
    passed = np.asarray(scores) >= threshold
    return np.where(passed.any(1), passed.argmax(1) + 1, passed.shape[1] + 1)


def candidate_thresholds(scores):
    """Ascending τ values, one per distinct exit decision the ``scores`` allow."""
    distinct = np.unique(np.asarray(scores, np.float64))
    return np.concatenate([[0.0], (distinct[:-1] + distinct[1:]) / 2, [NEVER_EXIT_EARLY]])


@dataclasses.dataclass
class Sweep:
    """Means over all images × levels for each threshold (arrays of one length)."""

    threshold: np.ndarray
    mean_psnr: np.ndarray
    mean_delta_psnr: np.ndarray
    mean_gmacs: np.ndarray
    mean_exit: np.ndarray

    def point(self, i):
        return {field.name: float(getattr(self, field.name)[i])
                for field in dataclasses.fields(self)}


def sweep(scores, exit_psnr, input_psnr, exit_gmacs):
    """Sweeps τ over :func:`candidate_thresholds`.

    ``scores`` [N, E−1]; ``exit_psnr`` [N, E]; ``input_psnr`` [N]; ``exit_gmacs`` [N, E]:
    the cost of running to exit k (staged: stages 1..k).
    """
    exit_psnr, exit_gmacs = np.asarray(exit_psnr), np.asarray(exit_gmacs)
    rows = np.arange(len(exit_psnr))
    thresholds = candidate_thresholds(scores)
    stats = []
    for tau in thresholds:
        k = choose_exits(scores, tau)
        stats.append((exit_psnr[rows, k - 1].mean(), exit_gmacs[rows, k - 1].mean(), k.mean()))
    psnr, gmacs, mean_exit = np.array(stats).T
    return Sweep(thresholds, psnr, psnr - np.mean(input_psnr), gmacs, mean_exit)


def pareto_front(cost, gain):
    """Indices of the points no other beats, by ascending cost (and strictly rising gain)."""
    front, best = [], -math.inf
    for i in np.lexsort((-np.asarray(gain), np.asarray(cost))):
        if gain[i] > best:
            front.append(i)
            best = gain[i]
    return np.array(front)


def knee_index(cost, gain):
    """Index of the knee of a cost-vs-gain curve (the ``knee`` rule of the module doc)."""
    cost, gain = np.asarray(cost, np.float64), np.asarray(gain, np.float64)
    front = pareto_front(cost, gain)
    if len(front) < 3:
        return int(front[-1])
    x, y = cost[front], gain[front]
    above = (y - y[0]) / (y[-1] - y[0]) - (x - x[0]) / (x[-1] - x[0])
    j = int(np.argmax(above))
    return int(front[j] if above[j] > 0 else front[-1])


def best_index(cost, gain):
    """Index of the highest ``gain`` (ties: the cheapest, then the first): the ``best`` rule."""
    return int(pareto_front(cost, gain)[-1])


def max_loss_index(cost, psnr, full_psnr, max_loss_db):
    """Index of the cheapest point with ``psnr`` ≥ ``full_psnr − max_loss_db`` (or None)."""
    cost, psnr = np.asarray(cost), np.asarray(psnr)
    ok = np.flatnonzero(psnr >= full_psnr - max_loss_db)
    if ok.size == 0:
        return None
    return int(ok[np.lexsort((ok, -psnr[ok], cost[ok]))[0]])


def thresholds_path(weights_path):
    """``<weights without .keras>.thresholds.json`` next to the weights."""
    path = Path(weights_path)
    stem = path.name[:-len(".keras")] if path.name.endswith(".keras") else path.name
    return path.with_name(stem + ".thresholds.json")


def read_thresholds_file(weights_path):
    """The calibration entries stored beside the weights: codec → entry ({} if no file).

    Raises ValueError (naming the file) for a file that is not a valid thresholds file.
    """
    path = thresholds_path(weights_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable thresholds file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping codec to its entry")
    for codec, entry in data.items():
        tau = entry.get("threshold") if isinstance(entry, dict) else None
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
            raise ValueError(f"{path}: entry {codec!r} has no numeric 'threshold'")
    return data


def load_thresholds(weights_path):
    """Calibrated exit thresholds stored beside the weights: codec → τ ({} if none)."""
    return {codec: float(entry["threshold"])
            for codec, entry in read_thresholds_file(weights_path).items()}


DEFAULT_GAIN_RULE = {"margin": 0.1, "tolerance": 0.05}
"""Used when the weights carry a gain predictor but no calibrated rule."""
GAIN_MARGINS = np.round(np.arange(0.0, 1.0001, 0.02), 2)
GAIN_TOLERANCES = np.round(np.arange(0.0, 0.3001, 0.01), 2)
MAX_LIGHT_LOSS_DB = 0.05
"""The gain rule's safety bound: no light input (QF ≥ 70, uncompressed) worse than this."""


def gain_outcomes(gains, margin, tolerance, exit_psnr, input_psnr, exit_gmacs, gate_gmacs,
                  gate=None):
    """(exit, PSNR, GMACs) per image under the gain rule (``gate`` [N]: the gate head's
    best predicted gain, :func:`rbqe_tf.gain.choose_exits`); exit 0 keeps the input and
    costs only the predictor (``gate_gmacs`` [N])."""
    k = choose_gain_exits(gains, margin, tolerance, gate)
    rows, taken = np.arange(len(k)), np.maximum(k, 1) - 1
    psnr = np.where(k == 0, input_psnr, np.asarray(exit_psnr)[rows, taken])
    gmacs = np.asarray(gate_gmacs) + np.where(k == 0, 0.0, np.asarray(exit_gmacs)[rows, taken])
    return k, psnr, gmacs


GAIN_TIE_DB = 0.002
"""Rules within this of the best mean ΔPSNR count as ties: the cheapest wins."""


def calibrate_gain(gains, exit_psnr, input_psnr, exit_gmacs, gate_gmacs, light,
                   max_light_loss_db=MAX_LIGHT_LOSS_DB, valid=None, gate=None):
    """The gain rule (margin, tolerance) for the ``valid`` images (bool [N], default all).

    Among the grid points leaving no valid ``light`` image (bool [N]) worse than
    ``max_light_loss_db``: those within :data:`GAIN_TIE_DB` of the highest mean ΔPSNR,
    then the cheapest, then the largest margin (the safest of equals), then the smallest
    tolerance. None if no grid point qualifies. JSON-ready."""
    input_psnr = np.asarray(input_psnr, np.float64)
    valid = np.ones(len(input_psnr), bool) if valid is None else np.asarray(valid, bool)
    light = np.asarray(light, bool) & valid
    points = []
    for margin in GAIN_MARGINS:
        for tolerance in GAIN_TOLERANCES:
            k, psnr, gmacs = gain_outcomes(gains, margin, tolerance, exit_psnr, input_psnr,
                                           exit_gmacs, gate_gmacs, gate)
            worst = float((psnr - input_psnr)[light].min()) if np.any(light) else 0.0
            if worst >= -max_light_loss_db:
                points.append({"margin": float(margin), "tolerance": float(tolerance),
                               "mean_delta_psnr": float((psnr - input_psnr)[valid].mean()),
                               "mean_gmacs": float(gmacs[valid].mean()),
                               "mean_exit": float(k[valid].mean()), "num_valid": int(valid.sum()),
                               "worst_light_delta_psnr": worst,
                               "max_light_loss_db": max_light_loss_db})
    if not points:
        return None
    best = max(p["mean_delta_psnr"] for p in points)
    ties = [p for p in points if p["mean_delta_psnr"] >= best - GAIN_TIE_DB]
    return min(ties, key=lambda p: (round(p["mean_gmacs"], 6), -p["margin"], p["tolerance"]))


def resolve_gain_rule(codec, weights_path):
    """({"margin", "tolerance"}, source): calibrated beside the weights ("calibrated") or
    :data:`DEFAULT_GAIN_RULE` ("default")."""
    entry = read_thresholds_file(weights_path).get(codec, {}) if weights_path else {}
    rule = entry.get("gain")
    if isinstance(rule, dict) and all(isinstance(rule.get(k), (int, float))
                                      for k in DEFAULT_GAIN_RULE):
        return {k: float(rule[k]) for k in DEFAULT_GAIN_RULE}, "calibrated"
    return dict(DEFAULT_GAIN_RULE), "default"


def resolve_threshold(codec, weights_path, threshold=None):
    """(τ, source): ``threshold`` if given ("flag"), else the one calibrated beside the
    weights ("calibrated"), else the paper's ("default"). ValueError on a bad value/file."""
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ValueError(f"--threshold must be a finite number, got {threshold}")
        return threshold, "flag"
    calibrated = load_thresholds(weights_path).get(codec)
    if calibrated is not None:
        return calibrated, "calibrated"
    return PUBLISHED_THRESHOLDS[codec], "default"


def save_threshold(weights_path, codec, entry):
    """Writes ``entry`` as ``codec``'s calibration beside the weights, keeping other codecs.

    The file is replaced atomically. Returns its path.
    """
    path = thresholds_path(weights_path)
    data = read_thresholds_file(weights_path)
    data[codec] = entry
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path
