"""Training configuration and its up-front checks (no TensorFlow import, so bad
configurations fail in well under a second)."""
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from rbqe_tf.config import VARIANTS
from rbqe_tf.levels import EXIT_WEIGHTS

CODEC_CHOICES = ("jpeg", "hevc", "both")
SCHEDULES = ("cosine", "constant")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
SIZE_MULTIPLE = 32
MANIFEST = "manifest.jsonl"
CHECKPOINT_DIR = "checkpoints"  # inside the run directory
CONFIG_NAME = "config.json"
NAMED_WEIGHT_TABLES = {"paper": EXIT_WEIGHTS, "uniform": np.ones_like(EXIT_WEIGHTS)}


class ConfigError(Exception):
    """A one-line problem with the configuration (the CLI exits with status 2)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; see ``python -m rbqe_tf.train --help``."""

    data: list
    run_dir: str
    val: list = dataclasses.field(default_factory=list)
    codec: str = "jpeg"
    variant: str = "rbqe"
    steps: int = 10000
    batch: int = 8
    patch: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup: int = 100
    clip_norm: float = 0.0
    exit_weights: str = "paper"
    relative_eps: float = 0.0
    low_qf: float = 0.0
    seed: int = 0
    ckpt_every: int = 200
    val_every: int = 2000
    val_crop: int = 0
    log_every: int = 20
    resume: bool = False
    strategy: str = "auto"
    init: str = ""

    @property
    def codecs(self):
        return ("jpeg", "hevc") if self.codec == "both" else (self.codec,)

    def built_data(self):
        """Whether --data names built sets (else raw image folders)."""
        return any((Path(d) / MANIFEST).is_file() for d in self.data)

    def to_dict(self):
        return dataclasses.asdict(self)


def parse_weight_table(spec):
    """``paper``, ``uniform``, or rows ``a,b,c,d,e;…`` (one row: the same weights at every
    level; five rows: one per severity 0..4) → float32 [5, 5]; ConfigError otherwise."""
    rows, exits = EXIT_WEIGHTS.shape
    if spec in NAMED_WEIGHT_TABLES:
        return NAMED_WEIGHT_TABLES[spec]
    try:
        table = np.array([[float(v) for v in row.split(",")] for row in spec.split(";")],
                         np.float32)
    except ValueError:
        raise ConfigError(f"--exit_weights {spec!r}: expected 'paper', 'uniform' or rows of "
                          f"comma-separated numbers separated by ';'") from None
    _require(table.ndim == 2 and table.shape[1] == exits and len(table) in (1, rows),
             f"--exit_weights {spec!r}: need 1 or {rows} rows of {exits} weights")
    _require(np.isfinite(table).all() and (table >= 0).all() and (table.sum(1) > 0).all(),
             f"--exit_weights {spec!r}: weights must be finite and >= 0, not all 0 in a row")
    return np.repeat(table, rows, 0) if len(table) == 1 else table


def cluster_workers():
    """Worker addresses that ``TF_CONFIG`` names ([] if it is unset); ConfigError if bad."""
    try:
        workers = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {}).get(
            "worker", [])
    except (ValueError, AttributeError):
        raise ConfigError("TF_CONFIG is not a JSON object with cluster.worker") from None
    return list(workers)


def wants_multi_worker(strategy):
    """Whether ``--strategy`` resolves to MultiWorkerMirroredStrategy (decidable before
    TensorFlow starts, which that strategy requires)."""
    return strategy == "multi_worker" or (strategy == "auto" and len(cluster_workers()) > 1)


def has_checkpoint(run_dir):
    """Whether ``run_dir`` holds a training checkpoint."""
    return (Path(run_dir) / CHECKPOINT_DIR / "checkpoint").is_file()


def _require(ok, message):
    if not ok:
        raise ConfigError(message)


def check(cfg):
    """Raises ConfigError for the first problem found in ``cfg``."""
    _require(cfg.variant in VARIANTS,
             f"unknown variant {cfg.variant!r} (expected one of {', '.join(VARIANTS)})")
    _require(cfg.codec in CODEC_CHOICES,
             f"unknown codec {cfg.codec!r} (expected one of {', '.join(CODEC_CHOICES)})")
    _require(cfg.lr_schedule in SCHEDULES,
             f"unknown lr schedule {cfg.lr_schedule!r} (expected one of {', '.join(SCHEDULES)})")
    _require(cfg.strategy in STRATEGIES,
             f"unknown strategy {cfg.strategy!r} (expected one of {', '.join(STRATEGIES)})")
    _require(cfg.strategy != "multi_worker" or cluster_workers(),
             "--strategy multi_worker needs TF_CONFIG naming the cluster's workers")
    _require(cfg.patch > 0 and cfg.patch % SIZE_MULTIPLE == 0,
             f"--patch must be a positive multiple of {SIZE_MULTIPLE}, got {cfg.patch}")
    _require(cfg.val_crop >= 0 and cfg.val_crop % SIZE_MULTIPLE == 0,
             f"--val_crop must be 0 (whole images) or a multiple of {SIZE_MULTIPLE}, "
             f"got {cfg.val_crop}")
    for name in ("steps", "batch", "ckpt_every", "log_every"):
        _require(getattr(cfg, name) > 0, f"--{name} must be positive, got {getattr(cfg, name)}")
    _require(cfg.val_every >= 0, "--val_every must be >= 0 (0: no periodic validation)")
    _require(cfg.lr > 0, f"--lr must be positive, got {cfg.lr}")
    _require(cfg.warmup >= 0 and cfg.clip_norm >= 0 and cfg.relative_eps >= 0,
             "--warmup, --clip_norm and --relative_eps must be >= 0")
    parse_weight_table(cfg.exit_weights)
    _require(0 <= cfg.low_qf <= 1, f"--low_qf must be in [0, 1], got {cfg.low_qf}")
    _require(cfg.data, "--data is required (raw image folders or a built set)")
    _require(cfg.run_dir, "--run_dir is required")
    for d in list(cfg.data) + list(cfg.val):
        _require(Path(d).is_dir(), f"{d}: no such directory")
    built = [(Path(d) / MANIFEST).is_file() for d in cfg.data]
    _require(all(built) or not any(built),
             "--data mixes built sets (with manifest.jsonl) and raw image folders")
    _require(not (cfg.low_qf and any(built)),
             "--low_qf applies to on-the-fly JPEG (raw image folders), not built sets")
    _require(cfg.codec == "jpeg" or all(built),
             f"--codec {cfg.codec} needs built sets for --data (python -m datasets.build "
             f"--codec hevc); only JPEG is compressed on the fly")
    val_built = len(cfg.val) == 1 and (Path(cfg.val[0]) / MANIFEST).is_file()
    _require(cfg.codec == "jpeg" or not cfg.val or val_built,
             f"--codec {cfg.codec} needs one built set for --val; only JPEG is compressed "
             f"on the fly")
    if cfg.init:
        _require(cfg.init.endswith(".keras") and Path(cfg.init).is_file(),
                 f"--init {cfg.init}: not an existing .keras file")
    run_dir = Path(cfg.run_dir)
    _require(not run_dir.exists() or run_dir.is_dir(), f"{run_dir}: exists and is not a directory")
    resumable = has_checkpoint(run_dir)
    _require(cfg.resume or not resumable,
             f"{run_dir} already holds a checkpoint: pass --resume to continue it, or "
             f"choose a new --run_dir")
    saved = run_dir / CONFIG_NAME
    if cfg.resume and resumable and saved.is_file():
        previous = json.loads(saved.read_text()).get("config", {}).get("variant")
        _require(previous in (None, cfg.variant),
                 f"{run_dir} was trained with --variant {previous}, not {cfg.variant}")
