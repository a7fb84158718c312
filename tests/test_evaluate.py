"""Evaluation: metric conventions, report consistency, calibration, thresholds file, CLI."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from rbqe_tf import calibration as cal
from rbqe_tf.color import rgb_to_y_uint8
from rbqe_tf.enhancer import Enhancer
from rbqe_tf.evaluation import (PSNR_CAP_DB, full_reference, measure, oracle_exits,
                                score_fidelity, spearman, summarize)
from rbqe_tf.metrics import to_uint8
from rbqe_tf.evaluation_data import DataError, find_sources
from rbqe_tf.macs import macs_per_stage
from rbqe_tf.model import build_model

SANITY_PSNR = {10: 27.82, 20: 30.12, 30: 31.48, 40: 32.43, 50: 33.20}  # data/README.md
LEVEL_FIELDS = ("input_psnr", "input_ssim", "input_psnr_b", "exit_psnr", "exit_ssim",
                "exit_psnr_b", "exit_delta_psnr", "early_exit_psnr", "early_exit_ssim",
                "early_exit_delta_psnr", "early_exit_mean_exit", "exit_histogram",
                "early_exit_mean_gmacs", "full_mean_gmacs", "early_exit_ms", "full_ms",
                "oracle_match_rate", "num_images")
LEVELS = (10, 30, 50)


def _texture(shape, seed):
    noise = np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2) * 4 - 380, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    return build_model("tiny")


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """A 64×64 gray image, a 48×80 RGB one (padded to 64×96) and a corrupt file."""
    d = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(d / "gray.png"), _texture((64, 64), 0))
    cv2.imwrite(str(d / "colour.png"), _texture((48, 80, 3), 1))
    (d / "broken.png").write_bytes(b"not an image")
    return d


@pytest.fixture(scope="module")
def measured(model, image_dir):
    _, sources, skipped = find_sources(image_dir, "jpeg", LEVELS)
    records, unreadable = measure(model, sources, "jpeg", progress=False)
    assert skipped == [] and len(unreadable) == 1 and "broken.png" in unreadable[0]
    return records


# Metric conventions -------------------------------------------------------------------

def test_input_psnr_matches_the_sanity_figures(shared_data):
    levels, sources, skipped = find_sources(shared_data / "val" / "classic5", "jpeg")
    assert levels == sorted(SANITY_PSNR) and len(sources) == 5 and not skipped
    psnrs = {level: [] for level in levels}
    for source in sources:
        gt, decoded = source.load()
        for level, image in decoded.items():
            psnrs[level].append(full_reference(gt, image, 8)[0])
    for level, expected in SANITY_PSNR.items():
        assert np.mean(psnrs[level]) == pytest.approx(expected, abs=0.01)


def test_colour_gives_bt601_y_and_gray_is_kept(image_dir):
    gt = {s.name: s.load()[0] for s in find_sources(image_dir, "jpeg", [50])[1]
          if s.name != "broken"}
    rgb = cv2.cvtColor(cv2.imread(str(image_dir / "colour.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(gt["colour"], rgb_to_y_uint8(rgb))
    np.testing.assert_array_equal(gt["gray"], cv2.imread(str(image_dir / "gray.png"), 0))


def test_full_reference_conventions():
    a = _texture((32, 40), 2)
    b = np.clip(a.astype(int) + 2, 0, 255).astype(np.uint8)
    p, s, pb = full_reference(a, b, 8)
    assert p == pytest.approx(10 * np.log10(255 ** 2 / np.mean((a - b.astype(float)) ** 2)))
    assert 0 < s < 1 and pb <= p
    flat = np.full((16, 16), 100, np.uint8)  # identical, no blocking: infinite → capped
    assert full_reference(flat, flat, 8) == (PSNR_CAP_DB, 1.0, PSNR_CAP_DB)
    np.testing.assert_array_equal(to_uint8(np.array([-0.1, 0.3 / 255, 0.7 / 255, 1.2])),
                                  [0, 0, 1, 255])


@pytest.mark.slow
def test_cli_report_on_classic5_has_the_sanity_input_psnrs(shared_data, weights, tmp_path):
    out = tmp_path / "eval.json"
    _run_cli("--data", shared_data / "val" / "classic5", "--weights", weights,
             "--json", out, check=True)
    levels = json.loads(out.read_text())["levels"]
    assert {int(k): v["input_psnr"] for k, v in levels.items()} == pytest.approx(
        SANITY_PSNR, abs=0.01)


# Report consistency -------------------------------------------------------------------

def test_figures_are_consistent(measured):
    report = summarize(measured, 0.79)
    assert list(report["levels"]) == [str(lv) for lv in LEVELS]
    for figs in [*report["levels"].values(), report["overall"]]:
        assert set(LEVEL_FIELDS) <= set(figs)
        hist = np.array(figs["exit_histogram"])
        assert len(hist) == len(figs["exit_psnr"]) == 5 and hist.sum() == figs["num_images"]
        assert figs["early_exit_mean_exit"] == pytest.approx(
            (hist * np.arange(1, 6)).sum() / hist.sum())
        assert figs["early_exit_mean_gmacs"] <= figs["full_mean_gmacs"]
        assert figs["full_mean_gmacs"] == pytest.approx(figs["exit_gmacs"][-1])
        np.testing.assert_allclose(figs["exit_delta_psnr"],
                                   np.array(figs["exit_psnr"]) - figs["input_psnr"])
        assert 0 < figs["full_ms"] and 0 <= figs["oracle_match_rate"] <= 1
    assert report["overall"]["num_images"] == 2 * len(LEVELS)


def test_threshold_zero_exits_first_and_above_one_exits_last(measured):
    first, last = summarize(measured, 0.0)["overall"], summarize(measured, 1.01)["overall"]
    n = first["num_images"]
    assert first["exit_histogram"] == [n, 0, 0, 0, 0]
    assert first["early_exit_psnr"] == pytest.approx(first["exit_psnr"][0])
    assert first["early_exit_mean_gmacs"] == pytest.approx(first["exit_gmacs"][0])
    assert last["exit_histogram"] == [0, 0, 0, 0, n]
    assert last["early_exit_psnr"] == pytest.approx(last["exit_psnr"][-1])
    assert last["early_exit_mean_gmacs"] == pytest.approx(last["full_mean_gmacs"])
    assert last["early_exit_ms"] > last["full_ms"]  # plus the four scores


def test_exits_and_scores_match_the_enhancer(model, image_dir, measured):
    decoded = {s.name: s.load()[1] for s in find_sources(image_dir, "jpeg", LEVELS)[1]
               if s.name != "broken"}
    enhancer = Enhancer(model, "jpeg")
    for record in measured:
        low, high = np.sort(record.exit_score[:-1])[1:3]  # τ between scores, never on one
        enhancer.threshold = float((low + high) / 2 if high - low > 1e-5 else low - 1e-4)
        _, k, scores = enhancer.enhance_y(decoded[record.name][record.level] / 255.0)
        assert k == cal.choose_exits(record.exit_score[None, :-1], enhancer.threshold)[0]
        assert len(scores) == min(k, 4)
        np.testing.assert_allclose(scores, record.exit_score[:len(scores)], atol=1e-6)


def test_macs_are_counted_at_the_padded_size(model, measured):
    colour = next(r for r in measured if r.name == "colour")
    np.testing.assert_allclose(colour.stage_gmacs, np.array(macs_per_stage(model, 64, 96)) / 1e9)


def test_oracle_is_the_earliest_exit_within_tolerance():
    psnr = np.array([[30.0, 30.96, 31.0, 30.99, 30.5],
                     [30.0, 29.0, 28.0, 27.0, 26.0],
                     [20.0, 20.0, 20.0, 20.0, 20.1]])
    np.testing.assert_array_equal(oracle_exits(psnr), [2, 1, 5])


# Score fidelity -----------------------------------------------------------------------

def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 1, 0, -7]) == pytest.approx(-1.0)
    # ties get average ranks: [1, 2.5, 2.5, 4] vs [1, 3, 2, 4] → 4.5 / √(4.5·5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / np.sqrt(22.5))
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_score_fidelity_block(measured):
    fidelity = score_fidelity(measured)
    levels, exits = fidelity["across_levels"], fidelity["across_exits"]
    assert levels["num"] + levels["num_undefined"] == 2
    assert exits["num"] + exits["num_undefined"] == len(measured)
    for block in (levels, exits):
        rhos = [w["rho"] for w in block["worst"]]
        assert rhos == sorted(rhos) and all(-1 <= r <= 1 for r in rhos)


# Calibration --------------------------------------------------------------------------

def test_candidate_thresholds_cover_every_decision():
    scores = np.array([[0.2, 0.6], [0.6, 1.0]])
    np.testing.assert_allclose(cal.candidate_thresholds(scores), [0, 0.4, 0.8, 1.01])
    np.testing.assert_array_equal(cal.choose_exits(scores, 0.0), [1, 1])
    np.testing.assert_array_equal(cal.choose_exits(scores, 0.7), [3, 2])
    np.testing.assert_array_equal(cal.choose_exits(scores, 1.01), [3, 3])


def _two_exit_curve():
    """Four images, exit 1 costs 1 and exit 2 costs 2; exit 1 loses [3, 1, 0.01, 0] dB for
    scores [0.1, 0.3, 0.5, 0.7]. Sweep: τ 0, 0.2, 0.4, 0.6, 1.01 → cost 1, 1.25, 1.5, 1.75,
    2 and mean loss 1.0025, 0.2525, 0.0025, 0, 0."""
    scores = np.array([[0.1], [0.3], [0.5], [0.7]])
    psnr = np.array([[27.0, 30.0], [29.0, 30.0], [29.99, 30.0], [30.0, 30.0]])
    cost = np.tile([1.0, 2.0], (4, 1))
    return cal.sweep(scores, psnr, np.full(4, 28.0), cost)


def test_sweep_and_knee_on_a_synthetic_curve():
    s = _two_exit_curve()
    np.testing.assert_allclose(s.threshold, [0, 0.2, 0.4, 0.6, 1.01])
    np.testing.assert_allclose(s.mean_gmacs, [1, 1.25, 1.5, 1.75, 2])
    np.testing.assert_allclose(s.mean_delta_psnr, 2 - np.array([1.0025, 0.2525, 0.0025, 0, 0]))
    # front: the first four (τ = 1.01 costs more for nothing); normalised gain − cost is
    # 0, 0.415, 0.331, 0 → the knee is τ = 0.2
    assert s.threshold[cal.knee_index(s.mean_gmacs, s.mean_delta_psnr)] == pytest.approx(0.2)


def test_knee_ignores_dominated_points_and_takes_the_best_without_a_knee():
    cost = [1, 2, 3, 4, 5, 2.5]
    gain = [0, 0.8, 0.9, 0.95, 1.0, 0.1]  # the last point is dominated
    assert cal.knee_index(cost, gain) == 1
    assert cal.knee_index([1, 2, 3], [0, 0.1, 1.0]) == 2  # convex: no point above the chord
    assert cal.knee_index([1, 2], [0.5, 0.4]) == 0  # the cheapest is also the best


def test_best_takes_the_highest_gain_and_the_cheapest_of_ties():
    s = _two_exit_curve()  # gains 0.9975, 1.7475, 1.9975, 2, 2 at τ 0, 0.2, 0.4, 0.6, 1.01
    assert s.threshold[cal.best_index(s.mean_gmacs, s.mean_delta_psnr)] == pytest.approx(0.6)
    assert cal.best_index([3, 1, 2], [1.0, 1.0, 0.5]) == 1  # a tie: the cheaper one
    assert cal.best_index([1, 2, 2], [0.2, 0.9, 0.9]) == 1  # a full tie: the first


def test_max_loss_picks_the_cheapest_tau_within_the_allowance():
    s = _two_exit_curve()
    full = 30.0
    for allowance, tau in ((0.05, 0.4), (0.3, 0.2), (0.0, 0.6), (5.0, 0.0)):
        i = cal.max_loss_index(s.mean_gmacs, s.mean_psnr, full, allowance)
        assert s.threshold[i] == pytest.approx(tau)
    assert cal.max_loss_index([1.0], [20.0], full, 0.1) is None


# Thresholds file ----------------------------------------------------------------------

def test_thresholds_file_round_trip_keeps_the_other_codec(tmp_path):
    weights = tmp_path / "m.keras"
    assert cal.thresholds_path(weights) == tmp_path / "m.thresholds.json"
    assert cal.load_thresholds(weights) == {}
    cal.save_threshold(weights, "hevc", {"threshold": 0.9, "rule": "r"})
    cal.save_threshold(weights, "jpeg", {"threshold": 0.8, "rule": "r"})
    cal.save_threshold(weights, "jpeg", {"threshold": 0.75, "rule": "r"})
    assert cal.load_thresholds(weights) == {"hevc": 0.9, "jpeg": 0.75}
    assert cal.read_thresholds_file(weights)["hevc"] == {"threshold": 0.9, "rule": "r"}
    cal.thresholds_path(weights).write_text('{"jpeg": {"rule": "r"}}')
    with pytest.raises(ValueError, match="no numeric 'threshold'"):
        cal.load_thresholds(weights)


# Data discovery -----------------------------------------------------------------------

def test_built_set_levels_and_missing_levels(tmp_path):
    gt = _texture((40, 40), 3)
    (tmp_path / "gt").mkdir()
    cv2.imwrite(str(tmp_path / "gt" / "a.png"), gt)
    rows = []
    for level in (20, 40):
        (tmp_path / "jpeg" / str(level)).mkdir(parents=True)
        decoded = cv2.imdecode(cv2.imencode(".jpg", gt, [cv2.IMWRITE_JPEG_QUALITY, level])[1], 0)
        cv2.imwrite(str(tmp_path / "jpeg" / str(level) / "a.png"), decoded)
        rows.append({"stem": "a", "source": "a.png", "codec": "jpeg", "level": level,
                     "gt": "gt/a.png", "path": f"jpeg/{level}/a.png", "height": 40,
                     "width": 40, "bytes": 1, "bpp": 0.1, "psnr": 30.0, "ssim": 0.9})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    levels, sources, _ = find_sources(tmp_path, "jpeg")
    assert levels == [20, 40] and [s.name for s in sources] == ["a"]
    loaded_gt, decoded = sources[0].load()
    np.testing.assert_array_equal(loaded_gt, gt)
    assert sorted(decoded) == [20, 40]
    with pytest.raises(DataError, match="level"):
        find_sources(tmp_path, "jpeg", ["30"])
    with pytest.raises(DataError, match="no hevc pairs"):
        find_sources(tmp_path, "hevc")


# Command line -------------------------------------------------------------------------

def _run_cli(*args, check=False):
    proc = subprocess.run([sys.executable, "-m", "rbqe_tf.evaluate", "--noprogress",
                           *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_report_plots_and_calibration(image_dir, weights, tmp_path):
    cal.save_threshold(weights, "jpeg", {"threshold": 0.5, "rule": "manual"})
    cal.save_threshold(weights, "hevc", {"threshold": 0.9, "rule": "manual"})
    out, plots = tmp_path / "eval.json", tmp_path / "plots"
    proc = _run_cli("--data", image_dir, "--weights", weights, "--levels", "10,50",
                    "--json", out, "--plots", plots, "--calibrate", check=True)
    assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads(out.read_text())
    meta = report["meta"]
    assert (meta["threshold"], meta["threshold_source"]) == (0.5, "calibrated")
    assert meta["levels"] == [10, 50] and meta["num_images"] == 2
    assert len(meta["skipped"]) == 1 and "broken.png" in meta["skipped"][0]
    assert list(report["levels"]) == ["10", "50"]
    assert set(LEVEL_FIELDS) <= set(report["overall"])
    assert report["overall"]["num_images"] == 4
    assert {"across_levels", "across_exits"} <= set(report["score_fidelity"])
    stored = cal.read_thresholds_file(weights)
    assert stored["hevc"]["threshold"] == 0.9
    assert stored["jpeg"]["threshold"] == report["calibration"]["knee"]["threshold"]
    assert stored["jpeg"]["levels"] == [10, 50]
    best, gains = report["calibration"]["best"], report["calibration"]["sweep"]["mean_delta_psnr"]
    assert best["mean_delta_psnr"] == max(gains)
    for name in ("tradeoff.png", "exit_histogram.png", "exit_delta_psnr.png"):
        assert cv2.imread(str(plots / name)) is not None


@pytest.mark.parametrize("case", ["empty dir", "missing dir", "unknown codec", "bad level",
                                  "missing weights", "not a model"])
def test_cli_bad_input_is_one_line_exit_2(case, image_dir, weights, tmp_path):
    not_a_model = tmp_path / "fake.keras"
    not_a_model.write_bytes(b"PK not a keras zip")
    (tmp_path / "empty").mkdir()
    args = {"empty dir": ["--data", tmp_path / "empty", "--weights", weights],
            "missing dir": ["--data", tmp_path / "nope", "--weights", weights],
            "unknown codec": ["--data", image_dir, "--weights", weights, "--codec", "av1"],
            "bad level": ["--data", image_dir, "--weights", weights, "--levels", "10,x"],
            "missing weights": ["--data", image_dir, "--weights", tmp_path / "no.keras"],
            "not a model": ["--data", image_dir, "--weights", not_a_model]}[case]
    proc = _run_cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
