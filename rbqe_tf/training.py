"""The one training definition every driver runs: data, model, schedule, checkpoints,
validation and the step loop (backend-neutral; a driver supplies only the step).

A driver (:mod:`rbqe_tf.tf_driver`, :mod:`rbqe_tf.keras_driver`, :mod:`rbqe_tf.qat_train`)
has ``groups`` (the variables a checkpoint holds), ``batches(start)`` (an iterator over
batch ``start``, ``start + 1``, … of :attr:`Training.sampler`), ``step(batch, lr)`` →
``(loss, per-exit MSE or None, applied)``, ``eval_model`` (what validation runs),
``final_model()`` (the float RBQE written as ``final.keras``) and ``log(step, meter, lr,
skipped)``.

Run-directory layout: ``config.json`` (resolved config + command line of every launch),
``checkpoints/`` (:mod:`rbqe_tf.checkpoints`), ``val_history.jsonl`` and, once the run's
length (``--steps`` or ``--time_budget``) is done, ``final.keras``. :meth:`Training.run`
returns the exit status: 0 done, 128+signal after a SIGINT/SIGTERM (the step finishes
and a checkpoint is saved first).
"""
import sys
import time
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from rbqe_tf import data
from rbqe_tf.checkpoints import Checkpoints
from rbqe_tf.config import get_config
from rbqe_tf.model import build_model, load_model
from rbqe_tf.schedule import learning_rate, progress
from rbqe_tf.train_config import ConfigError, parse_weight_table
from rbqe_tf.train_state import StopSignal, export_model, record_config
from rbqe_tf.train_val import Validator, append_history, format_table

FINAL_NAME = "final.keras"


class Meter:
    """Running means of the loss and per-exit MSE, and steps/s, since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.n, self.loss, self.mse, self.start = 0, 0.0, None, time.perf_counter()

    def add(self, loss, mse=None):
        self.n += 1
        self.loss += float(loss)
        if mse is not None:
            self.mse = (0.0 if self.mse is None else self.mse) + np.asarray(mse, np.float64)

    def means(self):
        n = max(self.n, 1)
        return self.loss / n, None if self.mse is None else np.atleast_1d(self.mse / n)

    def rate(self):
        return self.n / max(time.perf_counter() - self.start, 1e-9)

    def postfix(self, skipped):
        loss, mse = self.means()
        per_exit = "" if mse is None else f" | mse/exit {' '.join(f'{m:.2e}' for m in mse)}"
        return f"loss {loss:.3e}{per_exit} | skipped {skipped}"


def load_data(cfg):
    """(patch sampler, unreadable training images, validator or None) of ``cfg``."""
    training_set = data.load_training_set(cfg.data, cfg.codecs)
    sampler = data.PatchSampler(training_set, cfg.patch, cfg.batch, cfg.seed,
                                parse_weight_table(cfg.exit_weights), cfg.low_qf, cfg.light)
    crop = cfg.val_crop or None
    val = [im for codec in cfg.codecs for im in
           (data.validation_images(cfg.val, codec, crop=crop) if cfg.val else [])]
    multiple = get_config(cfg.variant).size_multiple
    return sampler, training_set.skipped, Validator(val, multiple) if val else None


def initial_model(cfg):
    """A fresh ``cfg.variant`` RBQE, with ``cfg.init``'s weights if given, trainable only
    from stage ``cfg.train_from_stage`` on."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.variant)
    if cfg.init:
        init = load_model(cfg.init)
        if init.rbqe_config != model.rbqe_config:
            raise ConfigError(f"--init {cfg.init}: architecture differs from --variant "
                              f"{cfg.variant}")
        model.set_weights(init.get_weights())
    freeze_before_stage(model, cfg.train_from_stage)
    return model


def freeze_before_stage(model, first):
    """Makes only the layers that stages ``first``… create trainable (exits < ``first``
    then keep their initial weights exactly); returns the trainable layer names."""
    earlier = {layer.name for stage in model.stage_models()[:first - 1] for layer in stage.layers}
    for layer in model.layers:
        layer.trainable = layer.name not in earlier
    return [layer.name for layer in model.layers if layer.trainable and layer.weights]


class Training:
    """One run of ``cfg`` (a TrainConfig); construction loads the data and raises
    ConfigError, ValueError, OSError, ImageError or WeightsError for bad data or weights."""

    def __init__(self, cfg, argv=(), chief=True):
        self.cfg, self.argv, self.chief = cfg, list(argv), chief
        self.run_dir = Path(cfg.run_dir)
        self.sampler, self.unreadable, self.validator = load_data(cfg)

    def say(self, message):
        if self.chief:
            tqdm.write(message)
            sys.stdout.flush()

    def run(self, driver, **record):
        """Steps from the latest checkpoint (with --resume) to the run's end; returns the
        exit status. ``record``: extra fields for config.json (e.g. the strategy)."""
        cfg = self.cfg
        checkpoints = Checkpoints(self.run_dir, driver.groups, self.chief)
        restored = checkpoints.restore_latest() if cfg.resume else None
        start, counters = restored or (0, {})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        before = (record_config(cfg, self.run_dir, restored is not None, start, self.argv,
                                self.unreadable, **record) if self.chief else None)
        with StopSignal() as stop:
            if restored is not None:
                self.say(f"resumed {self.run_dir} at step {start}"
                         + (" (--init ignored)" if cfg.init else ""))
            changed = before is not None and before != list(self.unreadable)
            if self.unreadable or changed:
                self.say(f"skipped {len(self.unreadable)} unreadable training image(s)"
                         + ("; the set differs from the previous launch's, so the resumed "
                            "data stream does too" if changed else ""))
            if restored is None and self.validator:
                self._validate(driver, 0, stop)
            step, counters = self._loop(driver, checkpoints, start, counters, stop)
            finished = stop.signum is None
            if self.validator and finished and (not cfg.val_every or step % cfg.val_every):
                self._validate(driver, step, stop)
            if finished and self.chief:
                export_model(driver.final_model(), self.run_dir / FINAL_NAME)
                self.say(f"done: {step} steps, {counters['skipped']} skipped; wrote "
                         f"{self.run_dir / FINAL_NAME}")
        if stop.signum is not None:
            path = checkpoints.save(step, counters)
            self.say(f"stopped by signal {stop.signum} after step {step}; saved {path}; "
                     f"continue with --resume")
            return 128 + stop.signum
        return 0

    def _loop(self, driver, checkpoints, step, counters, stop):
        """Runs steps until the run's end or a stop signal → (last step, counters)."""
        cfg, meter = self.cfg, Meter()
        counters = {"skipped": counters.get("skipped", 0),
                    "seconds": counters.get("seconds", 0)}
        started, elapsed = time.monotonic(), counters["seconds"]
        batches = driver.batches(step)
        with tqdm(total=cfg.steps or None, initial=step, disable=not self.chief,
                  dynamic_ncols=True, mininterval=1 if sys.stderr.isatty() else 30) as bar:
            while stop.signum is None:
                seconds = elapsed + time.monotonic() - started
                done = progress(step, cfg.steps, seconds, cfg.time_budget)
                if done >= 1.0:
                    break
                lr = learning_rate(step, cfg.lr, cfg.lr_schedule, cfg.warmup, done)
                loss, mse, applied = driver.step(next(batches), lr)
                step += 1
                counters["skipped"] += not applied
                counters["seconds"] = round(elapsed + time.monotonic() - started)
                if applied:  # skipped steps are counted, not averaged
                    meter.add(loss, mse)
                bar.update(1)
                if step % cfg.log_every == 0:
                    bar.set_postfix_str(meter.postfix(counters["skipped"]), refresh=False)
                    driver.log(step, meter, lr, counters["skipped"])
                    meter.reset()
                if step % cfg.ckpt_every == 0:
                    checkpoints.save(step, counters)
                if self.validator and cfg.val_every and step % cfg.val_every == 0:
                    self._validate(driver, step, stop)
        if stop.signum is None:
            checkpoints.save(step, counters)
        return step, counters

    def _validate(self, driver, step, stop):
        """Validates, prints and records; skipped if ``stop`` fires meanwhile."""
        rows = self.validator(driver.eval_model, should_stop=lambda: stop.signum is not None)
        if rows is None:
            return
        self.say(format_table(rows, step))
        if self.chief:
            driver.log_validation(rows, step)
            append_history(self.run_dir / "val_history.jsonl", rows, step)
