"""Real compressed patches for int8 calibration and validation, and the stage inputs
they lead to.

Each image gives its centre tile×tile crop of the 8-bit Y plane (mirror-padded when
smaller), compressed at every default level of every codec (JPEG QF 10–50 with
OpenCV, HEVC QP 22–42 with x265; ``rbqe_tf.compression``). Calibration also gets one
full-range ramp (0…255, compressed the same way) so that the int8 ranges of the
input and of the exits cover all of [0, 1] — a range set only by photos would clip
pixels brighter or darker than any calibration pixel.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rbqe_tf.compression import compress
from rbqe_tf.image_io import read_image
from rbqe_tf.levels import DEFAULT_LEVELS
from rbqe_tf.sources import to_y

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                  ".pnm")


def list_images(folder, limit=None):
    """Image files under ``folder`` (recursive, sorted, hidden entries skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return found[:limit]


def centre_crop(y, tile):
    """The centre tile×tile crop of ``y`` [H, W], mirror-padded (symmetric) if smaller."""
    h, w = y.shape
    top, left = max((h - tile) // 2, 0), max((w - tile) // 2, 0)
    crop = y[top:top + tile, left:left + tile]
    return np.pad(crop, ((0, tile - crop.shape[0]), (0, tile - crop.shape[1])), "symmetric")


def ramp(tile):
    """A uint8 tile×tile diagonal ramp covering 0…255."""
    r = np.add.outer(np.arange(tile), np.arange(tile)) / (2 * tile - 2)
    return np.round(r * 255).astype(np.uint8)


def compressed_patches(crops, codecs):
    """(ground truth, compressed) float32 [N, T, T, 1]: every crop at every level of ``codecs``."""
    jobs = [(crop, codec, level) for crop in crops for codec in codecs
            for level in DEFAULT_LEVELS[codec]]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        decoded = list(pool.map(lambda job: compress(job[1], job[0], job[2])[0], jobs))
    gt = np.stack([job[0] for job in jobs])[..., None].astype(np.float32) / 255
    comp = np.stack(decoded)[..., None].astype(np.float32) / 255
    return gt, comp


def image_crops(folder, tile, limit):
    """Centre Y crops of the first ``limit`` images of ``folder`` (uint8 [T, T] each)."""
    paths = list_images(folder, limit)
    if not paths:
        raise ValueError(f"{folder}: no images found")
    return [centre_crop(to_y(read_image(p)), tile) for p in paths]


def stage_inputs(graphs, k, ys, batch=8):
    """Inputs of ``stage_k`` (lists in its input order, batch 1) computed by the float
    stages before it from the Y batches ``ys`` [N, T, T, 1]."""
    stage = graphs[f"stage_{k}"]
    for start in range(0, len(ys), batch):
        values = {"y": ys[start:start + batch]}
        for s in range(1, k):
            g = graphs[f"stage_{s}"]
            outs = g.reference([values[n] for n in g.input_names])
            values.update(zip(g.output_names[1:], outs[1:]))
        for i in range(len(values["y"])):
            yield [values[n][i:i + 1] for n in stage.input_names]
