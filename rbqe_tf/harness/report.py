"""Markdown tables of a benchmark result (:mod:`rbqe_tf.harness.bench`)."""
from rbqe_tf.harness import op_profile


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


