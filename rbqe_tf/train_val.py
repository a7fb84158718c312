"""Validation during training: PSNR of every exit per codec level, measured as
``python -m rbqe_tf.evaluate`` measures (padding and rounding shared with it:
:func:`rbqe_tf.tiling.pad_to_multiple`, :func:`rbqe_tf.metrics.to_uint8`), under any
Keras backend.

Results are mean PSNR over the images of a (codec, level), with ΔPSNR = exit − input.
"""
import json
import time

import numpy as np

from rbqe_tf.metrics import psnr, to_uint8
from rbqe_tf.tiling import pad_to_multiple


class Validator:
    """Validates a model on a list of :class:`rbqe_tf.data.ValImage`."""

    def __init__(self, images, size_multiple):
        self.images, self.multiple = images, size_multiple

    def __call__(self, model, should_stop=lambda: False):
        """→ rows ``{codec, level, images, psnr_input, psnr: [per exit], dpsnr: [per exit]}``,
        or None if ``should_stop()`` became true between two images."""
        groups = {}
        for im in self.images:
            if should_stop():
                return None
            h, w = im.gt.shape
            y = pad_to_multiple(im.compressed / 255.0, self.multiple)[None, ..., None]
            exits = model.predict_on_batch(y.astype(np.float32))
            out = [to_uint8(np.asarray(e)[0, :h, :w, 0]) for e in exits]
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


def append_history(path, rows, step):
    """Appends one JSON line ``{step, time, results}`` to ``val_history.jsonl``."""
    with open(path, "a") as f:
        f.write(json.dumps({"step": step, "time": time.time(), "results": rows}) + "\n")
