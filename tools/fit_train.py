"""Backend-neutral RBQE trainer (Keras 3 ``model.fit``) for accelerator runs without TensorFlow.

``python -m rbqe_tf.train`` needs TensorFlow; GPU machines often carry only JAX or
PyTorch. This trainer runs the same model (``rbqe_tf.model``), the same loss (DESIGN §2:
per sample Σ_k w_k(severity) · MSE_k, averaged over the batch — equal to
``rbqe_tf.loss.weighted_loss``) and the same data conventions as ``rbqe_tf.train`` under
any Keras backend (``KERAS_BACKEND=jax`` on a GPU), with NumPy + OpenCV data only:

* JPEG: a random crop of a ground-truth Y plane (image drawn in proportion to its area),
  compressed by OpenCV (``rbqe_tf.compression.compress_jpeg``) at a quality factor drawn
  uniformly from 10..50 (or, for a ``--low_qf`` share of patches, from 10..20,
  ``rbqe_tf.levels.LOW_QF_MAX``), so the 8×8 grid sits at the patch origin;
* light JPEG (``--light`` share of JPEG patches, beyond the paper): a quarter
  uncompressed (target = input), half at a quality factor from 51..100, a quarter
  re-saved (QF 10..100, then again at 51..100, as re-uploaded images are), with every
  exit weighted ``rbqe_tf.levels.LIGHT_EXIT_WEIGHTS`` unless the first pass was heavy;
* HEVC: pre-coded crops (``--hevc DIR``: ``index.json`` naming each crop's ground-truth
  file and offset, ``NNNN_qpQ.png`` its x265 decodes as made by ``rbqe_tf.compression``);
  patches are cut at offsets that are multiples of 4 (the HEVC grid);
* both: each patch picks its codec with equal probability; one of the 8 flips/rotations.

``--relative_eps`` (beyond the paper) divides each patch's loss by its input MSE: plain
MSE is dominated by the heaviest level (HEVC QP 42's MSE is ~30× QP 22's), which lets a
blind model trade damage at light levels for small gains at heavy ones (the same as
``rbqe_tf.loss.relative_to_input``, ``rbqe_tf.train --relative_eps``).

``--mixed_bfloat16`` computes in bfloat16 with float32 variables and float32 exit layers
(the residual adds), for GPUs; the saved model is float32. With the shipped weights on
a 64² random input its exits differ from float32 by 0.16–0.19 grey levels RMS (at most
0.77), ~0.5 % of HEVC QP 22's input MSE, so prefer float32 for the lightest HEVC levels.

``--train_from_stage K`` trains only the layers that stages K… create: exits 1…K−1 keep
their initial weights exactly, so a deep exit can be specialised (e.g. on heavy JPEG with
``--low_qf``) without touching the shallow exits that light images leave from.

The learning rate follows a linear warm-up and a cosine decay to 1 % over the run's
length: ``--steps`` or ``--time_budget`` seconds, whichever ends first (a time budget makes
a run fit a lease; the steps actually taken are in the log). Writes ``NAME.keras``
(every ``--save_every`` seconds and at the end) and ``NAME.log.json``.

    KERAS_BACKEND=jax python -m tools.fit_train --gt GT_DIR --codec jpeg \\
        --init rbqe_tf/weights/rbqe_jpeg.keras --out OUT --name jpeg --time_budget 500
"""
import argparse
import glob
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
from keras import ops

from rbqe_tf.compression import compress_jpeg
from rbqe_tf.image_io import ImageError, read_image
from rbqe_tf.levels import (DEFAULT_LEVELS, LIGHT_EXIT_WEIGHTS, LIGHT_QF_MIN, LOW_QF_MAX,
                            exit_weights, severity)
from rbqe_tf.model import WeightsError, build_model, load_model
from rbqe_tf.sources import to_y

FINAL_LR_RATIO = 0.01
QF_MIN, QF_MAX = min(DEFAULT_LEVELS["jpeg"]), max(DEFAULT_LEVELS["jpeg"])


def read_y(path):
    return np.ascontiguousarray(to_y(read_image(path)))


def load_gt(gt_dir):
    files = sorted(glob.glob(os.path.join(gt_dir, "*.png")))
    if not files:
        raise ValueError(f"{gt_dir}: no PNG images")
    return {os.path.basename(f): read_y(f) for f in files}


def load_hevc(hevc_dir, gt):
    """[(gt crop, {qp: decoded crop})] from an index.json folder of pre-coded crops."""
    with open(os.path.join(hevc_dir, "index.json")) as f:
        index = json.load(f)
    size, crops = index["size"], []
    for c in index["crops"]:
        if c["gt"] not in gt:
            raise ValueError(f"{hevc_dir}: crop {c['n']} is cut from {c['gt']}, not in --gt")
        target = gt[c["gt"]][c["y0"]:c["y0"] + size, c["x0"]:c["x0"] + size]
        decoded = {qp: read_y(os.path.join(hevc_dir, f"{c['n']:04d}_qp{qp}.png"))
                   for qp in index["qps"]}
        crops.append((np.ascontiguousarray(target), decoded))
    return crops


class PatchSampler:
    """Batches ``(compressed, packed target)``: float32 [B, P, P, 1] and [B, P, P, 1 + exits]
    (target, then the patch's exit weights broadcast over the patch)."""

    def __init__(self, gt_planes, hevc_crops, codec, patch, batch, seed=0, low_qf=0.0,
                 relative_eps=0.0, light=0.0):
        self.patch, self.batch, self.seed, self.codec = patch, batch, seed, codec
        self.low_qf, self.relative_eps, self.light = low_qf, relative_eps, light
        self.planes = [p for p in gt_planes if min(p.shape) >= patch]
        if not self.planes:
            raise ValueError(f"no ground-truth image is at least {patch}x{patch}")
        area = np.array([p.size for p in self.planes], np.float64)
        self.p_image = area / area.sum()
        self.hevc = hevc_crops
        if codec in ("hevc", "both") and not hevc_crops:
            raise ValueError("--codec hevc/both needs --hevc crops")

    def _jpeg(self, rng):
        im = self.planes[rng.choice(len(self.planes), p=self.p_image)]
        y0 = rng.integers(0, im.shape[0] - self.patch + 1)
        x0 = rng.integers(0, im.shape[1] - self.patch + 1)
        gt = np.ascontiguousarray(im[y0:y0 + self.patch, x0:x0 + self.patch])
        if self.light and rng.random() < self.light:  # no draw when off
            return self._light(rng, gt)
        low = self.low_qf and rng.random() < self.low_qf  # no draw when off
        qf = int(rng.integers(QF_MIN, (LOW_QF_MAX if low else QF_MAX) + 1))
        return compress_jpeg(gt, qf)[0], gt, exit_weights(severity("jpeg", qf))

    @staticmethod
    def _light(rng, gt):
        kind = rng.random()
        if kind < 0.25:
            return gt, gt, LIGHT_EXIT_WEIGHTS
        qf = int(rng.integers(LIGHT_QF_MIN, 101))
        if kind < 0.75:
            return compress_jpeg(gt, qf)[0], gt, LIGHT_EXIT_WEIGHTS
        first = int(rng.integers(QF_MIN, 101))
        weights = LIGHT_EXIT_WEIGHTS if first >= LIGHT_QF_MIN else exit_weights(
            severity("jpeg", first))
        return compress_jpeg(compress_jpeg(gt, first)[0], qf)[0], gt, weights

    def _hevc(self, rng):
        gt, decoded = self.hevc[rng.integers(len(self.hevc))]
        qp = list(decoded)[rng.integers(len(decoded))]
        y0, x0 = (4 * rng.integers(0, (s - self.patch) // 4 + 1) for s in gt.shape)
        box = np.s_[y0:y0 + self.patch, x0:x0 + self.patch]
        return decoded[qp][box], gt[box], exit_weights(severity("hevc", qp))

    def __call__(self, index):
        rng = np.random.default_rng([self.seed, index])
        x = np.empty((self.batch, self.patch, self.patch, 1), np.float32)
        y = np.empty((self.batch, self.patch, self.patch, 6), np.float32)
        for b in range(self.batch):
            use_hevc = self.codec == "hevc" or (self.codec == "both" and rng.random() < 0.5)
            comp, gt, weights = self._hevc(rng) if use_hevc else self._jpeg(rng)
            t = int(rng.integers(8))
            comp, gt = np.rot90(comp, t % 4), np.rot90(gt, t % 4)
            if t >= 4:
                comp, gt = comp[:, ::-1], gt[:, ::-1]
            x[b, ..., 0] = comp / 255.0
            y[b, ..., 0] = gt / 255.0
            y[b, ..., 1:] = weights
            if self.relative_eps:
                y[b, ..., 1:] /= np.mean(np.square(x[b] - y[b, ..., :1])) + self.relative_eps
        return x, y


def batches(sampler, workers=4, start=0):
    """Endless batches from ``sampler`` made by a thread pool, in index order."""
    with ThreadPoolExecutor(workers) as pool:
        index, pending = start, []
        while True:
            while len(pending) < 2 * workers:
                pending.append(pool.submit(sampler, index))
                index += 1
            yield pending.pop(0).result()


def exit_loss(packed, stacked):
    """Per-sample Σ_k w_k · MSE_k; ``packed`` [B, P, P, 1 + K], ``stacked`` exits [B, P, P, K]."""
    target, weights = packed[..., :1], packed[:, 0, 0, 1:]
    mse = ops.mean(ops.square(stacked - target), axis=(1, 2))
    return ops.sum(weights * mse, axis=-1)


def mixed_precision_copy(model):
    """A copy of ``model`` computing in bfloat16 (variables and exit layers float32)."""
    exits = {f"exit_{k}" for k in range(1, len(model.outputs) + 1)}

    def copy_layer(layer):
        dtype = "float32" if layer.name in exits else "mixed_bfloat16"
        return layer.__class__.from_config({**layer.get_config(), "dtype": dtype})

    copy = keras.models.clone_model(model, clone_function=copy_layer)
    copy.set_weights(model.get_weights())
    return copy


def freeze_before_stage(model, first):
    """Makes only the layers that stages ``first``… create trainable (exits < ``first``
    are then exactly those of the initial weights); returns the trainable layer names."""
    earlier = {layer.name for stage in model.stage_models()[:first - 1] for layer in stage.layers}
    for layer in model.layers:
        layer.trainable = layer.name not in earlier
    return [layer.name for layer in model.layers if layer.trainable and layer.weights]


def training_model(model):
    """The exits of ``model`` stacked along channels (shares its layers)."""
    return keras.Model(model.input, ops.concatenate(model.outputs, axis=-1))


class Schedule(keras.callbacks.Callback):
    """Warm-up then cosine decay over the run's progress (steps or time, the further one);
    stops training at the end; saves the model periodically; logs per-epoch loss."""

    def __init__(self, lr, steps, time_budget, warmup, steps_per_epoch, save, save_every):
        super().__init__()
        self.lr, self.steps, self.budget, self.warmup = lr, steps, time_budget, warmup
        self.spe, self.save, self.save_every = steps_per_epoch, save, save_every
        self.history, self.start = [], None

    def progress(self, step):
        done = step / self.steps if self.steps else 0.0
        if self.budget:
            done = max(done, (time.time() - self.start) / self.budget)
        return done

    def lr_at(self, step):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        p = min(1.0, self.progress(step))
        return self.lr * (FINAL_LR_RATIO + (1 - FINAL_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * p)))

    def on_train_begin(self, logs=None):
        self.start = self.last_save = time.time()
        self.model.optimizer.learning_rate = self.lr_at(0)

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.spe
        self.history.append({"step": step, "seconds": round(time.time() - self.start, 1),
                             "loss": float(logs["loss"]), "lr": self.lr_at(step)})
        print(json.dumps(self.history[-1]), flush=True)
        if self.progress(step) >= 1.0:
            self.model.stop_training = True
        self.model.optimizer.learning_rate = self.lr_at(step)
        if time.time() - self.last_save > self.save_every:
            self.save()
            self.last_save = time.time()


def main(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                description=__doc__.splitlines()[0])
    p.add_argument("--gt", required=True, help="folder of ground-truth PNGs (Y or colour)")
    p.add_argument("--hevc", help="folder of pre-coded HEVC crops (index.json)")
    p.add_argument("--codec", choices=("jpeg", "hevc", "both"), default="jpeg")
    p.add_argument("--init", help="start from this .keras model (else a fresh --variant)")
    p.add_argument("--variant", default="rbqe")
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--steps", type=int, default=0, help="run length in steps (0: time only)")
    p.add_argument("--time_budget", type=float, default=0, help="run length in seconds")
    p.add_argument("--steps_per_epoch", type=int, default=100)
    p.add_argument("--save_every", type=float, default=120)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--low_qf", type=float, default=0.0,
                   help="share of JPEG patches with a quality factor from 10..20 (else 10..50)")
    p.add_argument("--light", type=float, default=0.0,
                   help="share of JPEG patches that are light: uncompressed, QF 51..100 or "
                        "re-saved (every exit weighted to leave them as they are)")
    p.add_argument("--relative_eps", type=float, default=0.0,
                   help="if > 0, divide each patch's loss by its input MSE + this: every "
                        "level counts by its relative error (≈ ΔPSNR), not its absolute MSE")
    p.add_argument("--mixed_bfloat16", action="store_true",
                   help="compute in bfloat16 (float32 variables, exits and saved model)")
    p.add_argument("--train_from_stage", type=int, default=1,
                   help="train only the layers of stages ≥ this one (1: all); exits below "
                        "it keep their initial weights exactly")
    a = p.parse_args(argv)
    if not (a.steps or a.time_budget):
        p.error("give --steps or --time_budget")
    started = time.time()
    try:
        gt = load_gt(a.gt)
        hevc = load_hevc(a.hevc, gt) if a.hevc else []
        sampler = PatchSampler(list(gt.values()), hevc, a.codec, a.patch, a.batch, a.seed,
                               a.low_qf, a.relative_eps, a.light)
        model = load_model(a.init) if a.init else build_model(a.variant)
        if not 1 <= a.train_from_stage <= len(model.outputs):
            raise ValueError(f"--train_from_stage {a.train_from_stage} is outside "
                             f"1..{len(model.outputs)} (the model's exits)")
    except (OSError, ValueError, ImageError, WeightsError) as e:
        sys.exit(f"error: {e}")
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"{a.name}.keras")
    net = mixed_precision_copy(model) if a.mixed_bfloat16 else model
    if a.train_from_stage > 1:
        trained = freeze_before_stage(net, a.train_from_stage)
        print(f"training {len(trained)} layers of stages >= {a.train_from_stage}", flush=True)

    def save():
        if net is not model:
            model.set_weights(net.get_weights())
        model.save(path)

    trainer = training_model(net)
    trainer.compile(optimizer=keras.optimizers.Adam(a.lr), loss=exit_loss)
    schedule = Schedule(a.lr, a.steps, a.time_budget, a.warmup, a.steps_per_epoch,
                        save, a.save_every)
    epochs = math.ceil(a.steps / a.steps_per_epoch) if a.steps else 10 ** 6
    trainer.fit(batches(sampler, a.workers), steps_per_epoch=a.steps_per_epoch, epochs=epochs,
                callbacks=[schedule], verbose=0, shuffle=False)
    save()
    steps = schedule.history[-1]["step"] if schedule.history else 0
    log = {"args": vars(a), "backend": keras.backend.backend(), "steps": steps,
           "train_seconds": schedule.history[-1]["seconds"] if schedule.history else 0,
           "total_seconds": round(time.time() - started, 1),
           "patches": steps * a.batch, "hevc_crops": len(hevc), "gt_images": len(gt),
           "history": schedule.history}
    with open(os.path.join(a.out, f"{a.name}.log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"{a.name}: {steps} steps in {log['train_seconds']} s -> {path}")


if __name__ == "__main__":
    main()
