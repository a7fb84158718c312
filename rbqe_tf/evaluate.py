"""``python -m rbqe_tf.evaluate``: quality, exits, cost and time of a model on a data folder.

    python -m rbqe_tf.evaluate --data DIR [--weights MODEL.keras] [--codec jpeg|hevc]
        [--levels 10,20,30,40,50] [--threshold T] [--json OUT.json] [--plots DIR]
        [--calibrate [--calibrate_rule knee|best|max_loss]] [--max_loss_db 0.05]
        [--calibrate_gain]

With a gain predictor beside the weights (``<weights>.gain.npz``) the report also has
the gain decision (exit 0 and predicted ΔPSNR, docs/decision.md) per level beside the
per-image oracle of exits 0..5; ``--calibrate_gain`` stores its calibrated margin and
tolerance. ``--levels`` takes ``none`` for the uncompressed input.

DIR: lossless ground-truth images (compressed here at each level) or a built set
(manifest.jsonl). Prints a per-level table; --json writes the full report
(docs/evaluation.md), --plots three PNGs, --calibrate the thresholds file beside the
weights. Unreadable images are skipped and listed; fatal problems give one
``error:`` line and exit status 2. TensorFlow loads only after the data checks, so
those errors come at once.
"""
import datetime
import json
import os
import sys

from absl import app, flags

from rbqe_tf.calibration import (MAX_LIGHT_LOSS_DB, RULES, read_thresholds_file,
                                 resolve_gain_rule, resolve_threshold, save_threshold)
from rbqe_tf.cli import check_range, fail, import_tensorflow_quietly, parse_flags
from rbqe_tf.evaluation_data import DataError, find_sources
from rbqe_tf.gain import load_predictor
from rbqe_tf.image_io import DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP, set_pixel_budget
from rbqe_tf.plots import PlotError, require_matplotlib, write_plots

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Folder of lossless ground-truth images, or a built set.")
flags.DEFINE_string("weights", None, "Model file (.keras) written by rbqe_tf.train "
                    "(default: the model shipped for --codec).")
flags.DEFINE_enum("codec", "jpeg", ["jpeg", "hevc"], "Codec of the compressed inputs.")
flags.DEFINE_list("levels", None, "JPEG qualities or HEVC QPs, 'none' for uncompressed "
                  "(default: the codec's five; for a built set, all its levels).")
flags.DEFINE_float("threshold", None, "Exit threshold τ (default: the calibrated one beside "
                   "the weights, else the published one).")
flags.DEFINE_string("json", None, "Write the full report to this JSON file.")
flags.DEFINE_string("plots", None, "Write PNG plots into this folder (needs matplotlib).")
flags.DEFINE_bool("calibrate", False, "Store the calibrated τ for --codec in "
                  "<weights without .keras>.thresholds.json (other codecs kept).")
flags.DEFINE_enum("calibrate_rule", "knee", list(RULES), "Which calibrated τ --calibrate stores.")
flags.DEFINE_float("max_loss_db", 0.05, "Allowed mean PSNR loss against always-exit-5 for "
                   "the max_loss rule.", lower_bound=0.0)
flags.DEFINE_bool("calibrate_gain", False, "Store the calibrated gain rule (margin, tolerance) "
                  "for --codec beside the weights: the highest mean ΔPSNR leaving no light "
                  f"input (QF >= 70, uncompressed) worse than {MAX_LIGHT_LOSS_DB} dB.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_float("max_megapixels", DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_HELP)


def _calibration_entry(report):
    cal, meta = report["calibration"], report["meta"]
    chosen = cal[FLAGS.calibrate_rule]
    kept = read_thresholds_file(meta["weights"]).get(FLAGS.codec, {})
    return {**({"gain": kept["gain"]} if "gain" in kept else {}),
            "threshold": chosen["threshold"], "rule": RULES[FLAGS.calibrate_rule],
            "max_loss_db": FLAGS.max_loss_db if FLAGS.calibrate_rule == "max_loss" else None,
            "mean_delta_psnr": chosen["mean_delta_psnr"], "mean_gmacs": chosen["mean_gmacs"],
            "full_mean_gmacs": cal["full_mean_gmacs"], "mean_exit": chosen["mean_exit"],
            "data": meta["data"], "levels": meta["levels"], "num_images": meta["num_images"],
            "date": meta["date"]}


def _print_table(report):
    meta, cal = report["meta"], report["calibration"]
    print(f"{meta['codec']} τ={meta['threshold']:.4f} ({meta['threshold_source']}), "
          f"{meta['num_images']} image(s) × {len(meta['levels'])} level(s)")
    print(f"{'level':>5}  {'input PSNR':>10}  {'ΔPSNR of exits 1..5':<34}  {'early ΔPSNR':>11}  "
          f"{'mean exit':>9}  {'GMACs early/full':>16}  {'ms early/full':>13}  oracle match")
    for level, f in [*report["levels"].items(), ("all", report["overall"])]:
        exits = " ".join(f"{d:+6.3f}" for d in f["exit_delta_psnr"])
        gmacs = f"{f['early_exit_mean_gmacs']:.3g}/{f['full_mean_gmacs']:.3g}"
        ms = f"{f['early_exit_ms']:.0f}/{f['full_ms']:.0f}"
        print(f"{level:>5}  {f['input_psnr']:10.3f}  {exits:<34}  "
              f"{f['early_exit_delta_psnr']:+11.3f}  {f['early_exit_mean_exit']:9.2f}  "
              f"{gmacs:>16}  {ms:>13}  {f['oracle_match_rate']:12.2f}")
    if "gain_decision" in report["overall"]:
        g = report["overall"]["gain_decision"]
        print(f"gain decision: margin {g['margin']:.2f} dB, tolerance {g['tolerance']:.2f} dB "
              f"({meta['gain_rule_source']})")
        print("ΔPSNR/worst/GMACs over measurable images (light inputs of JPEG-derived ground "
              "truths excluded: see docs/decision.md); exits: histogram 0..5")
        print(f"{'level':>5}  {'n':>3}  {'ΔPSNR':>7}  {'worst':>7}  {'GMACs':>6}  "
              f"{'exits 0..5':<24}  {'oracle ΔPSNR':>12}  {'GMACs':>6}  {'pred. MAE':>9}  ρ")
        for level, f in [*report["levels"].items(), ("all", report["overall"])]:
            g = f["gain_decision"]
            rho = "-" if g["predictor_spearman"] is None else f"{g['predictor_spearman']:.2f}"
            name = "none" if level == "-1" else level
            if not g["num_measurable"]:
                continue
            print(f"{name:>5}  {g['num_measurable']:3d}  {g['measurable_delta_psnr']:+7.3f}  "
                  f"{g['measurable_worst_delta_psnr']:+7.3f}  "
                  f"{g['mean_gmacs']:6.2f}  {' '.join(map(str, g['exit_histogram'])):<24}  "
                  f"{g['oracle_delta_psnr']:+12.3f}  {g['oracle_gmacs']:6.2f}  "
                  f"{g['predictor_mae_db']:9.3f}  {rho}")
    for key in ("knee", "best", "max_loss"):
        p = cal[key]
        print(f"{key:>8}: τ={p['threshold']:.4f}  ΔPSNR {p['mean_delta_psnr']:+.3f} dB  "
              f"{p['mean_gmacs']:.3g} GMACs (full {cal['full_mean_gmacs']:.3g})  "
              f"mean exit {p['mean_exit']:.2f}")


def main(argv):
    if len(argv) > 1:
        return fail(f"unexpected argument(s): {' '.join(argv[1:])}")
    if not FLAGS.data:
        return fail("--data is required (a folder of lossless images or a built set)")
    problem = check_range("--max_megapixels", FLAGS.max_megapixels, 0.01, what="> 0")
    if problem:
        return fail(problem)
    set_pixel_budget(FLAGS.max_megapixels)
    if FLAGS.json and not os.path.isdir(os.path.dirname(os.path.abspath(FLAGS.json))):
        return fail(f"{FLAGS.json}: its folder does not exist")
    if FLAGS.weights and not os.path.isfile(FLAGS.weights):
        return fail(f"{FLAGS.weights}: no such file")
    import_tensorflow_quietly()
    from rbqe_tf.model import WeightsError, default_weights, load_model
    try:
        weights = FLAGS.weights or default_weights(FLAGS.codec)
    except WeightsError as e:
        return fail(str(e))
    try:
        if FLAGS.plots:
            require_matplotlib()
        levels, sources, skipped = find_sources(FLAGS.data, FLAGS.codec, FLAGS.levels)
        threshold, threshold_source = resolve_threshold(FLAGS.codec, weights,
                                                        FLAGS.threshold)
        gain_rule, gain_source = resolve_gain_rule(FLAGS.codec, weights)
        predictor = load_predictor(weights)
    except (PlotError, DataError, ValueError) as e:
        return fail(str(e))
    if FLAGS.calibrate_gain and predictor is None:
        return fail(f"--calibrate_gain: no gain predictor beside {weights} "
                    "(python -m rbqe_tf.gain_fit)")

    from rbqe_tf.evaluation import (ORACLE_TOLERANCE_DB, calibrate, calibrate_gain_rule,
                                    environment, measure, score_fidelity, summarize)
    try:
        model = load_model(weights)
    except WeightsError as e:
        return fail(str(e))
    if model.rbqe_config.channels != 1:
        return fail(f"{weights}: a {model.rbqe_config.channels}-channel model; "
                    "evaluation needs a one-channel (Y) model")

    records, unreadable = measure(model, sources, FLAGS.codec, FLAGS.progress, predictor)
    skipped += unreadable
    if skipped:
        print(f"skipped {len(skipped)} image(s):", *skipped, sep="\n  ", file=sys.stderr)
    if not records:
        return fail(f"{FLAGS.data}: no readable images")
    gain_calibration = calibrate_gain_rule(records, FLAGS.codec) if predictor else None
    if FLAGS.calibrate_gain and gain_calibration is not None:
        gain_rule, gain_source = gain_calibration, "calibrated here"
    report = {**summarize(records, threshold, gain_rule if predictor else None, FLAGS.codec),
              "gain_calibration": gain_calibration,
              "score_fidelity": score_fidelity(records),
              "calibration": calibrate(records, FLAGS.max_loss_db),
              "meta": {"codec": FLAGS.codec, "threshold": threshold,
                       "threshold_source": threshold_source,
                       "gain_rule_source": gain_source if predictor else None,
                       "weights": os.path.abspath(weights), "model": model.name,
                       "levels": levels, "data": os.path.abspath(FLAGS.data),
                       "num_images": len({r.name for r in records}),
                       "num_records": len(records), "skipped": skipped,
                       "oracle_tolerance_db": ORACLE_TOLERANCE_DB,
                       "date": datetime.datetime.now(datetime.timezone.utc)
                       .isoformat(timespec="seconds"),
                       **environment()}}
    _print_table(report)
    try:
        if FLAGS.calibrate:
            entry = _calibration_entry(report)
            path = save_threshold(weights, FLAGS.codec, entry)
            print(f"stored {FLAGS.codec} τ={entry['threshold']:.4f} ({FLAGS.calibrate_rule}) "
                  f"in {path}")
        if FLAGS.calibrate_gain:
            if gain_calibration is None:
                return fail(f"--calibrate_gain: no margin/tolerance keeps every light input "
                            f"within {MAX_LIGHT_LOSS_DB} dB")
            entry = read_thresholds_file(weights).get(FLAGS.codec) or {
                "threshold": threshold, "rule": "published"}
            entry["gain"] = {**gain_calibration, "data": FLAGS.data,
                             "levels": levels, "date": report["meta"]["date"]}
            path = save_threshold(weights, FLAGS.codec, entry)
            print(f"stored {FLAGS.codec} gain rule margin {gain_calibration['margin']:.2f} dB, "
                  f"tolerance {gain_calibration['tolerance']:.2f} dB in {path}")
        if FLAGS.json:
            with open(FLAGS.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=1, allow_nan=False)
            print(f"report: {FLAGS.json}")
        if FLAGS.plots:
            print("plots:", *write_plots(FLAGS.plots, report))
    except (OSError, ValueError) as e:
        return fail(str(e))
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
