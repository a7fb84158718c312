"""Quantization-aware fine-tuning run: a float RBQE → fake-quantized tf-keras model,
trained with the per-exit weighted loss on the training data pipeline.

Run-directory layout: ``config.json`` (config + command line), ``checkpoints/``
(``tf.train.Checkpoint`` of the quantized model, optimizer and step; the model is
rebuilt from the config, so restoring needs no serialized tf-keras layers) and, when
the steps are done, ``final.keras``: the fine-tuned float weights as a Keras 3 RBQE
(what ``rbqe_tf.evaluate`` or PTQ export can read); :mod:`rbqe_tf.qat_checkpoint` reads
a run back. Import only in a QAT process (this imports tensorflow-model-optimization; see
:mod:`rbqe_tf.qat_model`).
"""
import sys
import time
from pathlib import Path

import tensorflow as tf
from tqdm import tqdm

from rbqe_tf import data
from rbqe_tf.model import RBQE, load_model
from rbqe_tf.train_config import CHECKPOINT_DIR, CONFIG_NAME, parse_weight_table
from rbqe_tf.train_log import Meter
from rbqe_tf.train_state import StopSignal, export_model, write_json
from rbqe_tf.trainer import FINAL_NAME, load_sources

from rbqe_tf import qat_model  # noqa: E402  (after Keras 3 imports: sets TF_USE_LEGACY_KERAS)
from rbqe_tf.qat_checkpoint import checkpoint  # noqa: E402
from rbqe_tf.loss import weighted_loss  # noqa: E402
import tf_keras  # noqa: E402

CALIBRATION_BATCHES = 4


class QATRun:
    """Fine-tunes ``cfg.init`` with fake quantization (``cfg``: a TrainConfig)."""

    def __init__(self, cfg, argv=()):
        self.cfg, self.run_dir = cfg, Path(cfg.run_dir)
        source, _ = load_sources(cfg)
        self.float_model = load_model(cfg.init)
        rbqe_cfg = self.float_model.rbqe_config
        twin = qat_model.build_twin(rbqe_cfg)
        qat_model.copy_weights(self.float_model, twin)
        self.qat = qat_model.quantize(twin)
        lr = (tf_keras.optimizers.schedules.CosineDecay(cfg.lr, cfg.steps, alpha=0.01)
              if cfg.lr_schedule == "cosine" else cfg.lr)
        self.optimizer = tf_keras.optimizers.Adam(lr)
        self.table = tf.constant(parse_weight_table(cfg.exit_weights), tf.float32)
        self.checkpoint, self.step = checkpoint(self.qat, self.optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.run_dir / CHECKPOINT_DIR,
                                                  max_to_keep=3)
        self.resumed = bool(cfg.resume and self.manager.latest_checkpoint)
        if self.resumed:
            latest = self.manager.latest_checkpoint
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        start = int(self.step.numpy())
        self.dataset = iter(data.make_train_dataset(source, cfg.patch, cfg.batch, seed=cfg.seed,
                                                    start_index=start * cfg.batch))
        if self.resumed:
            self.calibrated = 0
        else:  # from another stream, so that step n always trains on batch n
            batches = iter(data.make_train_dataset(source, cfg.patch, cfg.batch,
                                                   seed=cfg.seed + 1))
            self.calibrated = qat_model.calibrate(
                self.qat, [next(batches)[0] for _ in range(CALIBRATION_BATCHES)])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / CONFIG_NAME, {
            "config": cfg.to_dict(), "rbqe_config": rbqe_cfg.to_dict(), "command": list(argv),
            "start_step": start, "tensorflow": tf.__version__, "time": time.time()})
        self._train_step = tf.function(self._step, autograph=False)

    def _step(self, compressed, target, severity):
        variables = self.qat.trainable_variables
        with tf.GradientTape() as tape:
            exits = self.qat(compressed, training=True)
            per_sample, mse = weighted_loss(exits, target, severity, self.table)
            loss = tf.reduce_mean(per_sample)
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.step.assign_add(1)
        return loss, tf.reduce_mean(mse, 0)

    def evaluate_loss(self, batch):
        """Weighted loss of the fake-quantized model (inference mode) on one batch."""
        compressed, target, severity = batch
        per_sample, _ = weighted_loss(self.qat(compressed, training=False), target, severity,
                                      self.table)
        return float(tf.reduce_mean(per_sample))

    def train(self):
        """Steps to ``cfg.steps``, checkpoints, ``final.keras``; returns the exit status."""
        cfg, meter = self.cfg, Meter()
        step = int(self.step.numpy())
        with StopSignal() as stop, tqdm(total=cfg.steps, initial=step, dynamic_ncols=True,
                                        mininterval=1 if sys.stderr.isatty() else 30) as bar:
            while step < cfg.steps and stop.signum is None:
                loss, mse = self._train_step(*next(self.dataset))
                step += 1
                meter.add(loss, mse)
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    bar.set_postfix_str(meter.postfix(0), refresh=False)
                    meter.reset()
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    self.manager.save(checkpoint_number=step)
        if stop.signum is not None:
            path = self.manager.save(checkpoint_number=step)
            tqdm.write(f"stopped by signal {stop.signum} after step {step}; saved {path}; "
                       "continue with --resume")
            return 128 + stop.signum
        float_model = RBQE.from_config(self.float_model.get_config())
        qat_model.copy_weights(self.qat, float_model)
        export_model(float_model, self.run_dir / FINAL_NAME)
        tqdm.write(f"done: {cfg.steps} steps; checkpoint {self.manager.latest_checkpoint}; "
                   f"float weights {self.run_dir / FINAL_NAME}")
        return 0

