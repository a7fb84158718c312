"""Packs training data for a GPU lease without ffmpeg (``python -m rbqe_tf.train --driver
keras`` reads it there).

    python -m tools.pack_train_data --src ../shared/data/train --out .devdata \\
        [--hevc_crops 330] [--crop 144] [--seed 6] [--workers 2]

Writes ``OUT/gt/<stem with / → _>.png`` (the uint8 Y ground truth of every lossless
image under --src, ``rbqe_tf.sources``; ~0.65 bytes per pixel): a raw image folder for
on-the-fly JPEG. With ``--hevc_crops N``, ``OUT/hevc/`` is a built set in the format
``python -m datasets.build`` writes (``manifest.jsonl``, ``gt/``, ``hevc/<QP>/``) holding N
crops of ``--crop``² pixels at offsets that are multiples of 4, images drawn in
proportion to their area, each x265-coded at QP 22..42 by ``rbqe_tf.compression``.
Coding crops instead of whole images keeps the pack small enough to travel (its size:
WORKSPACE, the lease recipe). Train on both with ``--data OUT/gt,OUT/hevc --codec both``.
"""
import argparse
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from rbqe_tf import metrics
from rbqe_tf.compression import compress_hevc
from rbqe_tf.image_io import read_image
from rbqe_tf.levels import DEFAULT_LEVELS
from rbqe_tf.pairs_manifest import write_manifest
from rbqe_tf.sources import list_sources, stem_of, to_y

PNG = [cv2.IMWRITE_PNG_COMPRESSION, 9]


def pack_gt(src, out):
    """Writes the Y planes → {file name: plane}, in sorted name order."""
    os.makedirs(os.path.join(out, "gt"), exist_ok=True)
    planes = {}
    for path in list_sources(src):
        name = stem_of(path, src).replace("/", "_") + ".png"
        planes[name] = to_y(read_image(path))
        cv2.imwrite(os.path.join(out, "gt", name), planes[name], PNG)
    return dict(sorted(planes.items()))


def pick_crops(planes, count, size, seed):
    """[(n, file name, y0, x0)]: ``count`` 4-aligned crops, images weighted by area."""
    names = [n for n, p in planes.items() if min(p.shape) >= size]
    area = np.array([planes[n].size for n in names], np.float64)
    rng = np.random.default_rng(seed)
    crops = []
    for n, i in enumerate(rng.choice(len(names), count, p=area / area.sum())):
        h, w = planes[names[i]].shape
        y0 = 4 * rng.integers(0, (h - size) // 4 + 1)
        x0 = 4 * rng.integers(0, (w - size) // 4 + 1)
        crops.append((n, names[i], int(y0), int(x0)))
    return crops


def pack_hevc(planes, out, count, size, seed, workers):
    """Writes the HEVC crops as a built set under ``out``/hevc → its manifest rows."""
    root = os.path.join(out, "hevc")
    qps = list(DEFAULT_LEVELS["hevc"])
    for folder in ["gt"] + [f"hevc/{qp}" for qp in qps]:
        os.makedirs(os.path.join(root, folder), exist_ok=True)

    def code(crop):
        n, name, y0, x0 = crop
        stem = f"{n:04d}"
        target = np.ascontiguousarray(planes[name][y0:y0 + size, x0:x0 + size])
        cv2.imwrite(os.path.join(root, "gt", f"{stem}.png"), target, PNG)
        rows = []
        for qp in qps:
            decoded, n_bytes = compress_hevc(target, qp)
            path = f"hevc/{qp}/{stem}.png"
            cv2.imwrite(os.path.join(root, path), decoded, PNG)
            rows.append({"stem": stem, "source": f"{name}@{y0},{x0}", "codec": "hevc",
                         "level": qp, "gt": f"gt/{stem}.png", "path": path, "height": size,
                         "width": size, "bytes": n_bytes, "bpp": n_bytes * 8 / size ** 2,
                         "psnr": metrics.psnr(target, decoded),
                         "ssim": metrics.ssim(target, decoded)})
        return rows

    with ThreadPoolExecutor(workers) as pool:
        rows = [r for rs in pool.map(code, pick_crops(planes, count, size, seed)) for r in rs]
    write_manifest(root, rows)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name}" if __spec__ else None,
                                description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--hevc_crops", type=int, default=0)
    p.add_argument("--crop", type=int, default=144)
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    planes = pack_gt(a.src, a.out)
    print(f"{len(planes)} ground-truth planes → {a.out}/gt")
    if a.hevc_crops:
        pack_hevc(planes, a.out, a.hevc_crops, a.crop, a.seed, a.workers)
        print(f"{a.hevc_crops} HEVC crops → {a.out}/hevc (a built set)")


if __name__ == "__main__":
    main()
