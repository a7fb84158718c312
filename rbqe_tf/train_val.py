"""Periodic validation on whole images: PSNR of every exit per codec level.

Each image is padded bottom/right by reflection to a multiple of the network's size
multiple (the codec block grid stays at the origin), enhanced, cropped back, rounded
to 8 bits, and compared with its ground truth (:func:`rbqe_tf.metrics.psnr`). Results
are mean PSNR over the images of a (codec, level), with ΔPSNR = exit − compressed input.
"""
import json
import time

import numpy as np
import tensorflow as tf

from rbqe_tf.metrics import psnr
from rbqe_tf.train_log import scalar


def _pad(y, multiple):
    h, w = y.shape
    return np.pad(y, ((0, -h % multiple), (0, -w % multiple)), mode="reflect")


class Validator:
    """Validates a model on a list of :class:`rbqe_tf.data.ValImage`."""

    def __init__(self, images, size_multiple=32):
        self.images, self.multiple = images, size_multiple
        self._model = self._forward = None

    def __call__(self, model, should_stop=lambda: False):
        """→ rows ``{codec, level, images, psnr_input, psnr: [per exit], dpsnr: [per exit]}``,
        or None if ``should_stop()`` became true between two images."""
        if model is not self._model:  # trace once per model, shapes left dynamic
            self._model, self._forward = model, tf.function(
                lambda y: model(y, training=False),
                input_signature=[tf.TensorSpec([1, None, None, 1], tf.float32)])
        forward, groups = self._forward, {}
        for im in self.images:
            if should_stop():
                return None
            h, w = im.gt.shape
            y = _pad(im.compressed, self.multiple).astype(np.float32)[None, ..., None] / 255.0
            exits = forward(tf.constant(y))
            out = [np.clip(np.round(e.numpy()[0, :h, :w, 0] * 255.0), 0, 255) for e in exits]
            groups.setdefault((im.codec, im.level), []).append(
                [psnr(im.compressed, im.gt)] + [psnr(o, im.gt) for o in out])
        rows = []
        for (codec, level), values in sorted(groups.items()):
            mean = np.mean(values, axis=0)
            rows.append({"codec": codec, "level": int(level), "images": len(values),
                         "psnr_input": round(float(mean[0]), 4),
                         "psnr": [round(float(v), 4) for v in mean[1:]],
                         "dpsnr": [round(float(v - mean[0]), 4) for v in mean[1:]]})
        return rows


def format_table(rows, step):
    """Compact ΔPSNR table: one line per (codec, level), one column per exit."""
    exits = len(rows[0]["dpsnr"])
    lines = [f"validation at step {step}: PSNR of the compressed input and ΔPSNR (dB) per exit",
             f"{'codec':<6}{'level':>5}{'n':>4}{'input':>8}"
             + "".join(f"{f'exit{k}':>8}" for k in range(1, exits + 1))]
    for r in rows:
        lines.append(f"{r['codec']:<6}{r['level']:>5}{r['images']:>4}{r['psnr_input']:>8.2f}"
                     + "".join(f"{d:>+8.3f}" for d in r["dpsnr"]))
    mean = np.mean([r["dpsnr"] for r in rows], axis=0)
    lines.append(f"{'mean':<6}{'':>5}{'':>4}{'':>8}" + "".join(f"{d:>+8.3f}" for d in mean))
    return "\n".join(lines)


def write_summaries(rows, step):
    """Scalars ``val_psnr/<codec><level>/exit<k>``, ``val_dpsnr/…`` to the default writer."""
    for r in rows:
        for k, (p, d) in enumerate(zip(r["psnr"], r["dpsnr"]), 1):
            scalar(f"val_psnr/{r['codec']}{r['level']}/exit{k}", p, step)
            scalar(f"val_dpsnr/{r['codec']}{r['level']}/exit{k}", d, step)
    for k, d in enumerate(np.mean([r["dpsnr"] for r in rows], axis=0), 1):
        scalar(f"val_dpsnr/mean/exit{k}", d, step)


def append_history(path, rows, step):
    """Appends one JSON line ``{step, time, results}`` to ``val_history.jsonl``."""
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, "time": time.time(), "results": rows}) + "\n")
