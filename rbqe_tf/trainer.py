"""The training run: data, model, resume, the step loop, logging, validation and export.

Run-directory layout: ``config.json`` (resolved config + command line of every
launch), ``checkpoints/``, ``tb/`` (TensorBoard), ``val_history.jsonl`` and, once
``steps`` are done, ``final.keras``. :meth:`Run.train` returns the exit status: 0 done,
128+signal after a SIGINT/SIGTERM (the step finishes and a checkpoint is saved first).
"""
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from rbqe_tf import data
from rbqe_tf.model import build_model, load_model
from rbqe_tf.train_config import CONFIG_NAME, ConfigError, parse_weight_table
from rbqe_tf.train_log import Meter, scalar
from rbqe_tf.train_state import Checkpoints, StopSignal, export_model, write_json
from rbqe_tf.train_step import TrainStep, is_chief, learning_rate, make_strategy
from rbqe_tf.train_val import Validator, append_history, format_table, write_summaries

FINAL_NAME = "final.keras"


def load_sources(cfg):
    """(training source, validation images) from ``cfg.data`` / ``cfg.val``."""
    if cfg.built_data():
        source = data.from_built(cfg.data, codecs=cfg.codecs)
    else:
        source = data.on_the_fly_jpeg(cfg.data, low_qf=cfg.low_qf)
    crop = cfg.val_crop or None
    val = [im for codec in cfg.codecs for im in
           (data.validation_images(cfg.val, codec, crop=crop) if cfg.val else [])]
    return source, val


def build(cfg, strategy):
    """Model and :class:`TrainStep` under ``strategy``, initialised from ``cfg.init`` if given."""
    replicas = strategy.num_replicas_in_sync
    if cfg.batch % replicas:
        raise ConfigError(f"--batch {cfg.batch} is not divisible by the {replicas} replicas")
    init = load_model(cfg.init) if cfg.init else None
    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
        model = build_model(cfg.variant)
        if init is not None:
            if init.rbqe_config != model.rbqe_config:
                raise ConfigError(f"--init {cfg.init}: architecture differs from --variant "
                                  f"{cfg.variant}")
            model.set_weights(init.get_weights())
        lr = learning_rate(cfg.lr, cfg.lr_schedule, cfg.steps, cfg.warmup)
        step = TrainStep(model, strategy, cfg.batch, parse_weight_table(cfg.exit_weights),
                         lr=lr, clip_norm=cfg.clip_norm or None, relative_eps=cfg.relative_eps)
    return model, step


def record_config(cfg, run_dir, resumed, start_step, strategy, argv, unreadable=()):
    """Writes config.json: this launch's resolved config, command line, start step and
    unreadable training images; earlier launches of a resumed run are kept under
    ``previous``. Returns the previous launch's unreadable images (None: none recorded)."""
    path = run_dir / CONFIG_NAME
    previous = []
    if path.is_file() and resumed:
        old = json.loads(path.read_text())
        previous = old.pop("previous", []) + [old]
    write_json(path, {
        "config": cfg.to_dict(), "command": list(argv), "start_step": start_step,
        "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
        "tensorflow": tf.__version__, "keras": keras.__version__, "time": time.time(),
        "unreadable_images": list(unreadable), "previous": previous})
    return previous[-1].get("unreadable_images") if previous else None


class Run:
    """A training run: construction sets everything up (and raises ConfigError,
    ValueError, OSError, ImageError or WeightsError for bad data or weights);
    :meth:`train` runs the loop and returns the exit status."""

    def __init__(self, cfg, argv=()):
        self.cfg = cfg
        self.strategy = make_strategy(cfg.strategy)
        self.chief = is_chief(self.strategy)
        self.run_dir = Path(cfg.run_dir)
        source, val_images = load_sources(cfg)
        self.model, self.train_step = build(cfg, self.strategy)
        self.checkpoints = Checkpoints(self.run_dir, self.train_step, self.chief)
        restored = self.checkpoints.restore_latest() if cfg.resume else None
        self.resumed, self.start = restored is not None, restored or 0
        dataset = data.make_train_dataset(source, cfg.patch, cfg.batch, seed=cfg.seed,
                                          start_index=self.start * cfg.batch)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        self.iterator = iter(self.strategy.experimental_distribute_dataset(
            dataset.with_options(options)))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.unreadable, before = list(source.skipped), None
        if self.chief:
            before = record_config(cfg, self.run_dir, self.resumed, self.start, self.strategy,
                                   argv, self.unreadable)
        self.data_changed = before is not None and before != self.unreadable
        self.writer = (tf.summary.create_file_writer(str(self.run_dir / "tb")) if self.chief
                       else tf.summary.create_noop_writer())
        self.validator = (Validator(val_images, self.model.rbqe_config.size_multiple)
                          if val_images else None)

    def say(self, message):
        if self.chief:
            tqdm.write(message)
            sys.stdout.flush()

    def report_unreadable(self):
        """Prints and logs (TensorBoard ``data/unreadable_images``) the skipped images."""
        if self.unreadable or self.data_changed:
            self.say(f"skipped {len(self.unreadable)} unreadable training image(s)"
                     + ("; the set differs from the previous launch's, so the resumed "
                        "data stream does too" if self.data_changed else ""))
        if self.chief:
            with self.writer.as_default():
                scalar("data/unreadable_images", len(self.unreadable), self.start)

    def validate(self, step, stop):
        """Validates, prints and records; skipped if ``stop`` fires meanwhile."""
        rows = self.validator(self.model, should_stop=lambda: stop.signum is not None)
        if rows is None:
            return
        self.say(format_table(rows, step))
        if self.chief:
            with self.writer.as_default():
                write_summaries(rows, step)
            append_history(self.run_dir / "val_history.jsonl", rows, step)

    def train(self):
        """Steps from the start step to ``cfg.steps``; returns the exit status."""
        cfg = self.cfg
        with StopSignal() as stop:
            if self.resumed:
                self.say(f"resumed {self.run_dir} at step {self.start}"
                         + (" (--init ignored)" if cfg.init else ""))
            self.report_unreadable()
            if not self.resumed and self.validator:
                self.validate(0, stop)
            step = self._loop(stop)
            if self.validator and (not cfg.val_every or cfg.steps % cfg.val_every):
                self.validate(cfg.steps, stop)
            self.writer.flush()
            if stop.signum is None and self.chief:
                export_model(self.model, self.run_dir / FINAL_NAME)
                self.say(f"done: {cfg.steps} steps, {int(self.train_step.skipped.numpy())} "
                         f"skipped; wrote {self.run_dir / FINAL_NAME}")
        if stop.signum is not None:
            path = self.checkpoints.save()
            self.say(f"stopped by signal {stop.signum} after step {step}; saved {path}; "
                     f"continue with --resume")
            return 128 + stop.signum
        return 0

    def _loop(self, stop):
        """Runs steps until ``cfg.steps`` or a stop signal; returns the last step done."""
        cfg, train_step, step = self.cfg, self.train_step, self.start
        meter = Meter()
        with tqdm(total=cfg.steps, initial=self.start, disable=not self.chief,
                  dynamic_ncols=True, mininterval=1 if sys.stderr.isatty() else 30) as bar:
            while step < cfg.steps and stop.signum is None:
                loss, mse, norm = train_step.step(self.iterator)
                step += 1
                if np.isfinite(norm.numpy()):  # skipped steps are counted, not averaged
                    meter.add(loss, mse)
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    skipped = int(train_step.skipped.numpy())
                    bar.set_postfix_str(meter.postfix(skipped), refresh=False)
                    with self.writer.as_default():
                        meter.write(step, train_step.current_lr(), skipped)
                    meter.reset()
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    self.checkpoints.save()
                if self.validator and cfg.val_every and step % cfg.val_every == 0:
                    self.validate(step, stop)
        return step

