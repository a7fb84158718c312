"""Compression levels, their severity, and the per-exit loss weights (docs/method.md,
"Exit weights" and "Severity axis").

Severity puts both codecs on one axis: 0 = lightest table row (HEVC QP 22 /
JPEG QF 50) … 4 = heaviest (QP 42 / QF 10), linear in QP and QF in between.
Exit weights are linearly interpolated between table rows; a level outside the
table's range is rejected.
"""
import numpy as np

CODECS = ("jpeg", "hevc")
DEFAULT_LEVELS = {"jpeg": (10, 20, 30, 40, 50), "hevc": (22, 27, 32, 37, 42)}
BLOCK_SIZE = {"jpeg": 8, "hevc": 4}
LOW_QF_MAX = 20  # training's ``low_qf`` patches draw their JPEG QF from 10..this
# Light inputs (beyond the paper): JPEG above QF 50, re-saved and uncompressed images.
# Training weights every exit of such a patch equally and strongly (their MSE is far
# smaller than a heavy level's; docs/method.md, "Exit weights"), so each exit learns to
# leave a light image nearly as it is.
LIGHT_QF_MIN = 51
UNCOMPRESSED = -1  # the "level" of an uncompressed input ("none" on command lines)
LIGHT_EXIT_WEIGHTS = np.full(5, 8.0, np.float32)
# The paper's exit thresholds on its own test data (docs/method.md, "Decision");
# calibrated ones win.
PUBLISHED_THRESHOLDS = {"jpeg": 0.79, "hevc": 0.89}

# Rows: severity 0..4 (QP 22/27/32/37/42, QF 50/40/30/20/10); columns: exits 1..5.
EXIT_WEIGHTS = np.array([
    [2.0, 1.0, 1.0, 0.5, 0.5],
    [1.0, 2.0, 1.0, 0.5, 0.5],
    [0.5, 1.0, 2.0, 1.0, 0.5],
    [0.5, 0.5, 1.0, 2.0, 1.0],
    [0.5, 0.5, 1.0, 1.0, 2.0],
], np.float32)


def check_codec(codec):
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r} (expected one of {', '.join(CODECS)})")
    return codec


def severity(codec, level):
    """Maps a JPEG quality factor or HEVC QP to severity in [0, 4]."""
    check_codec(codec)
    lo, hi = min(DEFAULT_LEVELS[codec]), max(DEFAULT_LEVELS[codec])
    if not lo <= level <= hi:
        name = "quality factor" if codec == "jpeg" else "QP"
        raise ValueError(f"{codec} {name} {level} is outside the exit-weight table's "
                         f"range {lo}..{hi}")
    return (50.0 - level) / 10.0 if codec == "jpeg" else (level - 22.0) / 5.0


def is_light(level, codec):
    """Light inputs, which the gain rule must not make worse: uncompressed, JPEG QF ≥ 70."""
    return level == UNCOMPRESSED or (codec == "jpeg" and level >= 70)


def level_name(level):
    """A level as command lines and file names write it ("none": uncompressed)."""
    return "none" if level == UNCOMPRESSED else str(level)


def exit_weights(sev, table=EXIT_WEIGHTS):
    """Per-exit loss weights for severity ``sev`` (scalar or array) → [..., num_exits]."""
    sev = np.asarray(sev, np.float32)
    rows = np.arange(len(table), dtype=np.float32)
    return np.stack([np.interp(sev, rows, table[:, k]) for k in range(table.shape[1])], -1)
