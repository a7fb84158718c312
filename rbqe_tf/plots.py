"""PNG plots of an evaluation report (matplotlib, optional: ``pip install matplotlib``)."""
from pathlib import Path


class PlotError(Exception):
    """Plots were asked for but cannot be made (one-line message)."""


def require_matplotlib():
    """The pyplot module (Agg backend), or PlotError if matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("--plots needs matplotlib, which is not installed "
                        "(pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plots(out_dir, report):
    """Writes tradeoff.png, exit_histogram.png and exit_delta_psnr.png → their paths."""
    plt = require_matplotlib()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("tradeoff.png", _tradeoff), ("exit_histogram.png", _histograms),
                       ("exit_delta_psnr.png", _forced_exits)):
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        draw(ax, report)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


def _title(report):
    meta = report["meta"]
    return f"{meta['codec'].upper()} levels {', '.join(map(str, meta['levels']))}"


def _tradeoff(ax, report):
    cal, overall = report["calibration"], report["overall"]
    sweep = cal["sweep"]
    ax.plot(sweep["mean_gmacs"], sweep["mean_delta_psnr"], ".-", color="0.55", ms=3,
            lw=0.8, label="early exit, τ sweep")
    ax.plot(overall["exit_gmacs"], overall["exit_delta_psnr"], "s", color="tab:blue",
            label="forced exits 1..5 (staged cost)")
    for k, (x, y) in enumerate(zip(overall["exit_gmacs"], overall["exit_delta_psnr"]), 1):
        ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(4, -10))
    for key, marker, color in (("max_loss", "D", "tab:green"), ("best", "^", "tab:purple"),
                               ("knee", "*", "tab:red")):
        point = cal[key]
        label = (f"max loss {point['max_loss_db']} dB: τ={point['threshold']:.4f}"
                 if key == "max_loss" else f"{key} τ={point['threshold']:.4f}")
        ax.plot(point["mean_gmacs"], point["mean_delta_psnr"], marker, color=color, ms=11,
                label=label)
    ax.plot(overall["early_exit_mean_gmacs"], overall["early_exit_delta_psnr"], "o",
            mfc="none", mec="k", ms=10,
            label=f"evaluated τ={report['meta']['threshold']:.4f}")
    ax.set_xlabel("mean GMACs per image")
    ax.set_ylabel("mean ΔPSNR (dB)")
    ax.set_title(f"Quality vs cost over τ — {_title(report)}")
    ax.legend(fontsize=8)


def _histograms(ax, report):
    levels = report["levels"]
    width = 0.8 / len(levels)
    for i, (level, figs) in enumerate(levels.items()):
        exits = range(1, len(figs["exit_histogram"]) + 1)
        ax.bar([k - 0.4 + (i + 0.5) * width for k in exits], figs["exit_histogram"], width,
               label=f"level {level}")
    ax.set_xticks(list(exits))
    ax.set_xlabel("exit taken")
    ax.set_ylabel("images")
    ax.set_title(f"Early-exit histogram at τ={report['meta']['threshold']:.4f} — "
                 f"{_title(report)}")
    ax.legend(fontsize=8)


def _forced_exits(ax, report):
    for level, figs in report["levels"].items():
        exits = range(1, len(figs["exit_delta_psnr"]) + 1)
        line, = ax.plot(exits, figs["exit_delta_psnr"], "o-", label=f"level {level}")
        ax.axhline(figs["early_exit_delta_psnr"], color=line.get_color(), ls=":", lw=1)
    ax.set_xticks(list(exits))
    ax.set_xlabel("forced exit")
    ax.set_ylabel("mean ΔPSNR (dB)")
    ax.set_title(f"ΔPSNR of each exit (dotted: early exit) — {_title(report)}")
    ax.legend(fontsize=8)
