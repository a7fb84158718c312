"""Quantization-aware fine-tuning of a trained RBQE model (tensorflow-model-optimization).

    python -m rbqe_tf.qat --init W.keras --data DIR[,DIR…] --run_dir DIR [--codec jpeg|hevc|both]
        [--steps N] [--batch B] [--patch P] [--lr LR] [--lr_schedule cosine|constant]
        [--exit_weights paper] [--seed S] [--ckpt_every N] [--log_every N] [--resume]

The same training definition as ``rbqe_tf.train`` (patches, per-exit weighted loss,
schedule, checkpoints: :mod:`rbqe_tf.training`); the model is the fake-quantized tf-keras
twin of --init (activation ranges calibrated on batches of another seed). Writes checkpoints to DIR/checkpoints and the
fine-tuned float weights to DIR/final.keras. Export the int8 models with
``python -m export.tflite --quantize --from-qat DIR --out OUT``. Runs in its own process:
tfmot sets TF_USE_LEGACY_KERAS=1 (docs/qat.md). Exit status: 0 done, 2 bad
configuration, 128+N after signal N (a checkpoint is saved).
"""
import sys

from absl import app, flags, logging

from rbqe_tf.cli import fail, import_tensorflow_quietly, parse_flags
from rbqe_tf.schedule import SCHEDULES
from rbqe_tf.train_config import CODEC_CHOICES, ConfigError, TrainConfig, check

D = TrainConfig(data=[], run_dir="", steps=300, lr=1e-4, warmup=0, ckpt_every=100)
FLAGS = flags.FLAGS
flags.DEFINE_string("init", "", "Trained float model (.keras) to fine-tune (required).")
flags.DEFINE_list("data", [], "Training data: raw image folders, or built set(s) with "
                  "manifest.jsonl (comma-separated).")
flags.DEFINE_string("run_dir", "", "Run directory (config, checkpoints, final.keras).")
flags.DEFINE_string("codec", D.codec, f"Codec to train on: {'|'.join(CODEC_CHOICES)}.")
flags.DEFINE_integer("steps", D.steps, "Fine-tuning steps.")
flags.DEFINE_integer("batch", D.batch, "Batch size.")
flags.DEFINE_integer("patch", D.patch, "Patch side (a multiple of 32).")
flags.DEFINE_float("lr", D.lr, "Peak learning rate (Adam).")
flags.DEFINE_string("lr_schedule", D.lr_schedule, f"{'|'.join(SCHEDULES)}: cosine decays to "
                    "lr/100 at --steps.")
flags.DEFINE_string("exit_weights", D.exit_weights, "Per-level exit loss weights (as "
                    "rbqe_tf.train).")
flags.DEFINE_integer("seed", D.seed, "Seed of the data stream.")
flags.DEFINE_float("low_qf", D.low_qf, "Share of on-the-fly JPEG patches with QF 10..20 (else "
                   "10..50); match the float model's training mix.")
flags.DEFINE_float("light", D.light, "Share of on-the-fly JPEG patches that are light (as "
                   "rbqe_tf.train).")
flags.DEFINE_float("relative_eps", D.relative_eps, "Relative loss (as rbqe_tf.train).")
flags.DEFINE_float("time_budget", D.time_budget, "Run length in seconds (0: --steps alone).")
flags.DEFINE_integer("warmup", D.warmup, "Warm-up steps of the cosine schedule.")
flags.DEFINE_integer("workers", D.workers, "Threads making patches.")
flags.DEFINE_integer("ckpt_every", D.ckpt_every, "Checkpoint every N steps.")
flags.DEFINE_integer("log_every", D.log_every, "Progress-line update interval.")
flags.DEFINE_boolean("resume", False, "Continue from the run directory's latest checkpoint.")

FIELDS = ("init", "data", "run_dir", "codec", "steps", "batch", "patch", "lr", "lr_schedule",
          "exit_weights", "seed", "ckpt_every", "log_every", "resume", "low_qf", "light",
          "relative_eps", "time_budget", "warmup", "workers")


def main(argv):
    if len(argv) > 1:
        return fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.init:
        return fail("--init is required (the trained float model to fine-tune)")
    cfg = TrainConfig(**{**D.to_dict(), **{name: FLAGS[name].value for name in FIELDS},
                         "strategy": "default"})
    try:
        check(cfg)
    except ConfigError as e:
        return fail(str(e))
    import_tensorflow_quietly()
    logging.set_verbosity(logging.WARNING)
    from rbqe_tf.image_io import ImageError
    from rbqe_tf.model import WeightsError
    from rbqe_tf.qat_train import train
    try:
        return train(cfg, ["python", "-m", "rbqe_tf.qat", *sys.argv[1:]])[0]
    except (ConfigError, ValueError, OSError, ImageError, WeightsError) as e:
        return fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
