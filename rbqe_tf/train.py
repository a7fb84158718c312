"""Trains RBQE (one multi-exit network, all exits supervised) on JPEG and/or HEVC data.

    python -m rbqe_tf.train --data DIR[,DIR…] [--val DIR[,DIR…]] --run_dir DIR
        [--driver tensorflow|keras] [--codec jpeg|hevc|both] [--variant rbqe|tiny]
        [--steps N] [--time_budget SECONDS] [--batch B] [--patch P] [--lr LR] …
        [--resume] [--init WEIGHTS.keras]

--data: raw image folders (JPEG-compressed on the fly) and/or ``python -m datasets.build``
output folders (manifest.jsonl; needed for HEVC). Two drivers run the same training
definition (:mod:`rbqe_tf.training`): ``tensorflow`` (tf.distribute, TensorBoard) and
``keras`` (any Keras backend, e.g. ``KERAS_BACKEND=jax`` on a GPU without TensorFlow);
a flag a driver cannot honour is a one-line error. A run directory that holds a
checkpoint is only continued with --resume (which starts fresh where there is none).
Exit status: 0 done, 2 bad configuration (one line on stderr, nothing done), 128+N after
signal N (SIGINT/SIGTERM: the current step finishes and a checkpoint is saved).
"""
import sys

from absl import app, flags, logging

from rbqe_tf.cli import fail, import_tensorflow_quietly, parse_flags
from rbqe_tf.schedule import SCHEDULES
from rbqe_tf.train_config import (CODEC_CHOICES, DRIVERS, STRATEGIES, ConfigError,
                                  TrainConfig, check, wants_multi_worker)

D = TrainConfig(data=[], run_dir="")  # defaults
FLAGS = flags.FLAGS
flags.DEFINE_list("data", [], "Training data: raw image folders (JPEG made per patch) "
                  "and/or built sets with manifest.jsonl (comma-separated).")
flags.DEFINE_list("val", [], "Validation: image folders (JPEG made here) or one built set. "
                  "Empty: no validation.")
flags.DEFINE_string("run_dir", "", "Run directory (config, checkpoints, TensorBoard, final.keras).")
flags.DEFINE_string("driver", D.driver, f"{'|'.join(DRIVERS)}: the tf.distribute loop, or "
                    "Keras train_on_batch under any backend (KERAS_BACKEND).")
flags.DEFINE_string("codec", D.codec, f"Codec to train on: {'|'.join(CODEC_CHOICES)}.")
flags.DEFINE_string("variant", D.variant, "Network variant (rbqe_tf.config.VARIANTS).")
flags.DEFINE_integer("steps", D.steps, "Run length in steps (0: --time_budget alone).")
flags.DEFINE_float("time_budget", D.time_budget, "Run length in seconds of training (0: "
                   "--steps alone); with both, whichever ends first. The lr schedule follows "
                   "the run's progress.")
flags.DEFINE_integer("batch", D.batch, "Global batch size (split across replicas).")
flags.DEFINE_integer("patch", D.patch, "Patch side (a multiple of 32).")
flags.DEFINE_float("lr", D.lr, "Peak learning rate (Adam).")
flags.DEFINE_string("lr_schedule", D.lr_schedule, f"{'|'.join(SCHEDULES)}: cosine = linear "
                    "warm-up, then cosine decay to lr/100 at --steps.")
flags.DEFINE_integer("warmup", D.warmup, "Warm-up steps of the cosine schedule.")
flags.DEFINE_float("clip_norm", D.clip_norm, "Clip the gradient's global norm to this (0: off).")
flags.DEFINE_float("low_qf", D.low_qf, "Share of on-the-fly JPEG patches whose QF is drawn "
                   "from 10..20 instead of 10..50 (the shipped model's last launch used 0.5).")
flags.DEFINE_float("light", D.light, "Share of on-the-fly JPEG patches that are light "
                   "(uncompressed, QF 51..100 or re-saved), every exit weighted to leave them "
                   "as they are (beyond the paper).")
flags.DEFINE_float("relative_eps", D.relative_eps, "If > 0, divide each patch's loss by its "
                   "input MSE + this, so every level counts by its relative error (≈ ΔPSNR), "
                   "not its absolute MSE (beyond the paper; helps HEVC QP 22).")
flags.DEFINE_string("exit_weights", D.exit_weights, "Per-level exit loss weights: paper, "
                    "uniform, or 'w1,…,w5' (all levels) or five such rows separated by ';' "
                    "(severity 0..4).")
flags.DEFINE_integer("seed", D.seed, "Seed of the initial weights and the data stream.")
flags.DEFINE_integer("ckpt_every", D.ckpt_every, "Checkpoint every N steps.")
flags.DEFINE_integer("val_every", D.val_every, "Validate every N steps (0: only at start/end).")
flags.DEFINE_integer("val_crop", D.val_crop, "Validate on centre crops of this side (0: whole "
                     "images).")
flags.DEFINE_integer("log_every", D.log_every, "Progress-bar and TensorBoard update interval.")
flags.DEFINE_boolean("resume", D.resume, "Continue from the run directory's latest checkpoint.")
flags.DEFINE_string("strategy", D.strategy, f"tf.distribute strategy: {'|'.join(STRATEGIES)}.")
flags.DEFINE_string("init", D.init, "Start from the weights of this .keras model.")
flags.DEFINE_integer("train_from_stage", D.train_from_stage, "Train only the layers of stages "
                     ">= this one (1: all); the exits below keep their initial weights.")
flags.DEFINE_boolean("mixed_bfloat16", D.mixed_bfloat16, "Compute in bfloat16 (float32 "
                     "variables, exits and saved model); keras driver, for GPUs.")
flags.DEFINE_integer("workers", D.workers, "Threads making patches.")


def main(argv):
    if len(argv) > 1:
        return fail(f"unexpected arguments: {' '.join(argv[1:])}")
    cfg = TrainConfig(**{name: FLAGS[name].value for name in D.to_dict()})
    try:
        check(cfg)
    except ConfigError as e:
        return fail(str(e))
    tensorflow = cfg.driver == "tensorflow"
    if tensorflow and not wants_multi_worker(cfg.strategy):  # that one starts TF itself
        import_tensorflow_quietly()  # only for a valid configuration
    logging.set_verbosity(logging.WARNING)  # absl would show TensorFlow's INFO messages
    if tensorflow:
        from rbqe_tf.tf_driver import train
    else:
        from rbqe_tf.keras_driver import train
    from rbqe_tf.image_io import ImageError
    from rbqe_tf.model import WeightsError
    try:
        return train(cfg, ["python", "-m", "rbqe_tf.train", *sys.argv[1:]])
    except (ConfigError, ValueError, OSError, ImageError, WeightsError) as e:
        return fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
