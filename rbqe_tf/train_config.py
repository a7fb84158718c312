"""Training configuration and its up-front checks (no TensorFlow or Keras import, so bad
configurations fail in well under a second, whatever the driver)."""
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from rbqe_tf.checkpoints import has_checkpoint
from rbqe_tf.config import VARIANTS
from rbqe_tf.levels import EXIT_WEIGHTS
from rbqe_tf.pairs_manifest import manifest_path
from rbqe_tf.schedule import SCHEDULES

CODEC_CHOICES = ("jpeg", "hevc", "both")
DRIVERS = ("tensorflow", "keras")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
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
    driver: str = "tensorflow"
    steps: int = 10000
    time_budget: float = 0.0
    batch: int = 8
    patch: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup: int = 100
    clip_norm: float = 0.0
    exit_weights: str = "paper"
    relative_eps: float = 0.0
    low_qf: float = 0.0
    light: float = 0.0
    seed: int = 0
    ckpt_every: int = 200
    val_every: int = 2000
    val_crop: int = 0
    log_every: int = 20
    resume: bool = False
    strategy: str = "auto"
    init: str = ""
    train_from_stage: int = 1
    mixed_bfloat16: bool = False
    workers: int = 2

    @property
    def codecs(self):
        return ("jpeg", "hevc") if self.codec == "both" else (self.codec,)

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


def _require(ok, message):
    if not ok:
        raise ConfigError(message)


def check(cfg):
    """Raises ConfigError for the first problem found in ``cfg``."""
    for name, value, choices in (("variant", cfg.variant, VARIANTS),
                                 ("codec", cfg.codec, CODEC_CHOICES),
                                 ("lr_schedule", cfg.lr_schedule, SCHEDULES),
                                 ("strategy", cfg.strategy, STRATEGIES),
                                 ("driver", cfg.driver, DRIVERS)):
        _require(value in choices,
                 f"unknown --{name} {value!r} (expected one of {', '.join(choices)})")
    _check_driver(cfg)
    _require(cfg.strategy != "multi_worker" or cluster_workers(),
             "--strategy multi_worker needs TF_CONFIG naming the cluster's workers")
    multiple = VARIANTS[cfg.variant].size_multiple
    _require(cfg.patch > 0 and cfg.patch % multiple == 0,
             f"--patch must be a positive multiple of {multiple}, got {cfg.patch}")
    _require(cfg.val_crop >= 0 and cfg.val_crop % multiple == 0,
             f"--val_crop must be 0 (whole images) or a multiple of {multiple}, "
             f"got {cfg.val_crop}")
    for name in ("batch", "ckpt_every", "log_every", "workers"):
        _require(getattr(cfg, name) > 0, f"--{name} must be positive, got {getattr(cfg, name)}")
    _require(cfg.steps > 0 or cfg.time_budget > 0,
             "give a positive --steps or --time_budget (the run's length)")
    _require(cfg.steps >= 0 and cfg.time_budget >= 0, "--steps and --time_budget must be >= 0")
    _require(cfg.val_every >= 0, "--val_every must be >= 0 (0: no periodic validation)")
    _require(cfg.lr > 0, f"--lr must be positive, got {cfg.lr}")
    _require(cfg.warmup >= 0 and cfg.clip_norm >= 0 and cfg.relative_eps >= 0,
             "--warmup, --clip_norm and --relative_eps must be >= 0")
    parse_weight_table(cfg.exit_weights)
    for name in ("low_qf", "light"):
        _require(0 <= getattr(cfg, name) <= 1,
                 f"--{name} must be in [0, 1], got {getattr(cfg, name)}")
    exits = VARIANTS[cfg.variant].num_exits
    _require(1 <= cfg.train_from_stage <= exits,
             f"--train_from_stage must be in 1..{exits}, got {cfg.train_from_stage}")
    _require(cfg.data, "--data is required (raw image folders and/or built sets)")
    _require(cfg.run_dir, "--run_dir is required")
    for d in list(cfg.data) + list(cfg.val):
        _require(Path(d).is_dir(), f"{d}: no such directory")
    raw = [d for d in cfg.data if not manifest_path(d).is_file()]
    _require(not ((cfg.low_qf or cfg.light) and not raw),
             "--low_qf and --light apply to on-the-fly JPEG (raw image folders in --data)")
    _require(cfg.codec == "jpeg" or len(raw) < len(cfg.data),
             f"--codec {cfg.codec} needs a built set in --data (python -m datasets.build "
             f"--codec hevc); only JPEG is compressed on the fly")
    val_built = len(cfg.val) == 1 and manifest_path(cfg.val[0]).is_file()
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
        previous = json.loads(saved.read_text()).get("config", {})
        for name in ("variant", "driver", "train_from_stage", "mixed_bfloat16"):
            _require(previous.get(name, getattr(cfg, name)) == getattr(cfg, name),
                     f"{run_dir} was trained with --{name} {previous.get(name)}, not "
                     f"{getattr(cfg, name)}")


def _check_driver(cfg):
    """A flag the chosen driver cannot honour is a one-line error."""
    if cfg.driver == "keras":
        _require(cfg.strategy in ("auto", "default"),
                 f"--strategy {cfg.strategy} needs --driver tensorflow (tf.distribute); the "
                 f"keras driver runs on one device")
    else:
        _require(not cfg.mixed_bfloat16, "--mixed_bfloat16 needs --driver keras")
