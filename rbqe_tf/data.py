"""Training patches and validation images (NumPy/OpenCV only, so every training driver —
the TensorFlow loop, the backend-neutral Keras driver, QAT — draws the same patches).

A batch is ``(compressed, target, weights)``: float32 [B, P, P, 1] in [0, 1], the same
for the ground truth, and float32 [B, exits], the patch's per-exit loss weights
(docs/method.md, Exit weights). Sources:

* :func:`from_built` — pairs written by ``python -m datasets.build`` (JPEG, HEVC or both);
* :func:`on_the_fly_jpeg` — ground truth compressed per patch by OpenCV at a random
  quality factor (uniform over 10..50; a ``low_qf`` share from 10..20; a ``light``
  share uncompressed, at QF 51..100 or re-saved, every exit weighted to leave it alone).

Design:

* Batch n is a pure function of ``(seed, n)``: each patch draws from its own generator
  keyed by ``[seed, n, b]``, so a resumed run restarts at its step and sees exactly the
  batches it would have seen, whatever the driver, and patches can be made in parallel.
* A record (built: one image at one codec level; on the fly: one image) is drawn with
  probability proportional to its area, so every pixel is seen about equally often.
* Crop offsets of built pairs are multiples of the codec block size (8 JPEG, 4 HEVC):
  the blocking grid sits at the patch origin, as it does at inference on whole images
  (padded bottom/right). P is a multiple of 32, so flips and 90° rotations keep the grid
  aligned. On-the-fly JPEG compresses the crop itself, which also puts the grid there.
* Images smaller than the patch are skipped with a warning giving their count and names.
* Unreadable files are skipped too: one warning names each once, and the set's
  ``skipped`` ("file: reason") gives the trainer the count. Every image is read once,
  when the set is loaded, so a file damaged later cannot disturb the running stream.
"""
import collections
import copy
import dataclasses
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rbqe_tf.batch import IMAGE_EXTENSIONS
from rbqe_tf.compression import compress_jpeg
from rbqe_tf.config import RBQEConfig
from rbqe_tf.image_io import ImageError, read_image
from rbqe_tf.levels import (BLOCK_SIZE, DEFAULT_LEVELS, EXIT_WEIGHTS, LIGHT_EXIT_WEIGHTS,
                            LIGHT_QF_MIN, LOW_QF_MAX, UNCOMPRESSED, check_codec, exit_weights,
                            severity)
from rbqe_tf.pairs_manifest import manifest_path, read_manifest
from rbqe_tf.sources import to_y

log = logging.getLogger(__name__)

SIZE_MULTIPLE = RBQEConfig().size_multiple
QF_RANGE = (min(DEFAULT_LEVELS["jpeg"]), max(DEFAULT_LEVELS["jpeg"]))

ValImage = collections.namedtuple("ValImage", "compressed gt codec level name")
ValImage.__doc__ = "One validation image: uint8 [H, W] compressed and ground-truth Y planes."

Record = collections.namedtuple("Record", "gt compressed codec level name")
Record.__doc__ = ("A training record: uint8 ground-truth Y, its compressed twin (None: JPEG "
                  "is made per patch), codec, level (None on the fly) and name.")

Patch = collections.namedtuple("Patch", "compressed target weights codec level")
Patch.__doc__ = ("One training patch: uint8 [P, P] planes, float32 exit weights, and the "
                 "codec and level it was made at (level -1: uncompressed).")


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingSet:
    """Training records in memory (ground truths shared, not copied)."""

    records: tuple
    skipped: tuple = ()  # "file: reason" of unreadable files
    grid_aligned: bool = True

    @property
    def names(self):
        return tuple(r.name for r in self.records)

    def __add__(self, other):
        if self.grid_aligned != other.grid_aligned:
            raise ValueError("cannot join grid-aligned and unaligned training sets")
        return TrainingSet(self.records + other.records, self.skipped + other.skipped,
                           self.grid_aligned)


def from_built(out_dir, codecs=("jpeg",), levels=None, grid_aligned=True):
    """Loads the pairs of ``codecs`` at ``levels`` from built set(s) into memory.

    ``out_dir``: a ``datasets.build`` output folder or a list of them (e.g. one per
    codec). ``levels``: None (all in the manifest), a sequence for every codec, or a
    mapping codec → sequence (a codec it lacks: all levels). Each ground truth is held
    once. ``grid_aligned``: crop offsets on the codec block grid (see module doc).
    Records whose compressed or ground-truth file is unreadable are skipped (module doc).
    """
    out_dirs = [out_dir] if isinstance(out_dir, (str, Path)) else list(out_dir)
    rows = [(Path(d), row) for d in out_dirs for row in _manifest(Path(d), codecs, levels)]
    gts, records, skipped = {}, [], {}
    for d, row in rows:
        key = (d / row["gt"]).resolve()
        if key not in gts and key not in skipped:
            gts[key] = _try_read(key, skipped)
        if gts.get(key) is None:
            continue
        comp = _try_read(d / row["path"], skipped, gts[key].shape)
        if comp is not None:
            records.append(Record(gts[key], comp, row["codec"], row["level"], row["stem"]))
    _warn_skipped(skipped.values())
    if not records:
        raise ValueError(f"no readable pairs in {', '.join(map(str, out_dirs))}")
    return TrainingSet(tuple(records), tuple(skipped.values()), grid_aligned)


def on_the_fly_jpeg(src_dirs):
    """Loads the images under ``src_dirs`` (recursively) as Y planes for on-the-fly JPEG.

    Colour → BT.601 Y, gray as is; unreadable files are skipped with a warning.
    """
    names, planes, skipped = _load_y_images(src_dirs)
    return TrainingSet(tuple(Record(p, None, "jpeg", None, n) for n, p in zip(names, planes)),
                       tuple(skipped))


def load_training_set(dirs, codecs=("jpeg",)):
    """``--data`` folders → one :class:`TrainingSet`: built sets (with manifest.jsonl) give
    their pairs of ``codecs``, raw image folders their images for on-the-fly JPEG; every
    codec must come from somewhere."""
    parts = []
    for d in dirs:
        if manifest_path(d).is_file():
            held = {row["codec"] for row in read_manifest(d)}
            mine = tuple(c for c in codecs if c in held)
            parts += [from_built(d, mine)] if mine else []
    raw = [d for d in dirs if not manifest_path(d).is_file()]
    parts += [on_the_fly_jpeg(raw)] if raw and "jpeg" in codecs else []
    missing = [c for c in codecs if all(r.codec != c for p in parts for r in p.records)]
    if missing:
        raise ValueError(f"no {'/'.join(missing)} training data in "
                         f"{', '.join(map(str, dirs))}")
    return sum(parts[1:], parts[0])


class PatchSampler:
    """``sampler(n)`` → batch n (module doc); :meth:`patch` gives one patch with its level.

    ``table``: exit weights per severity row (default: the paper's); ``low_qf``: share of
    on-the-fly JPEG patches whose QF comes from 10..20; ``light``: share of on-the-fly
    JPEG patches that are light (beyond the paper: uncompressed, QF 51..100, or re-saved);
    ``augment``: one of the 8 flips/rotations, the same for both planes.
    """

    def __init__(self, training_set, patch=64, batch=8, seed=0, table=EXIT_WEIGHTS,
                 low_qf=0.0, light=0.0, augment=True):
        _check_multiple(patch, "patch size")
        if not (isinstance(batch, (int, np.integer)) and batch > 0):
            raise ValueError(f"batch size must be positive, got {batch!r}")
        for name, share in (("low_qf", low_qf), ("light", light)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {share!r}")
        self.patch, self.batch, self.seed, self.table = patch, batch, seed, table
        self.low_qf, self.light, self.augment = low_qf, light, augment
        fits = [min(r.gt.shape) >= patch for r in training_set.records]
        small = sorted({r.name for r, ok in zip(training_set.records, fits) if not ok})
        if small:
            log.warning("skipping %d image(s) smaller than %dx%d: %s", len(small), patch,
                        patch, ", ".join(small))
        self.records = [r for r, ok in zip(training_set.records, fits) if ok]
        if not self.records:
            raise ValueError(f"no image is at least {patch}x{patch}")
        self.grid = [BLOCK_SIZE[r.codec] if training_set.grid_aligned and r.compressed
                     is not None else 1 for r in self.records]
        area = np.array([r.gt.size for r in self.records], np.float64)
        self.p_record = area / area.sum()

    def reseeded(self, seed):
        """The same sampler drawing another stream (no reload, no repeated warnings)."""
        twin = copy.copy(self)
        twin.seed = seed
        return twin

    def __call__(self, n):
        patches = [self.patch_at(n, b) for b in range(self.batch)]
        x = np.stack([p.compressed for p in patches])[..., None].astype(np.float32) / 255.0
        y = np.stack([p.target for p in patches])[..., None].astype(np.float32) / 255.0
        return x, y, np.stack([p.weights for p in patches]).astype(np.float32)

    def patch_at(self, n, b):
        """Patch ``b`` of batch ``n``."""
        rng = np.random.default_rng([self.seed, n, b])
        i = rng.choice(len(self.records), p=self.p_record)
        r, step, size = self.records[i], self.grid[i], self.patch
        y0, x0 = (step * rng.integers(0, (s - size) // step + 1) for s in r.gt.shape)
        box = np.s_[y0:y0 + size, x0:x0 + size]
        gt = np.ascontiguousarray(r.gt[box])
        if r.compressed is None:
            comp, weights, level = self._jpeg(rng, gt)
        else:
            comp, level = r.compressed[box], r.level
            weights = exit_weights(severity(r.codec, level), self.table)
        if self.augment:
            t = int(rng.integers(8))
            comp, gt = (_dihedral(a, t) for a in (comp, gt))
        return Patch(np.ascontiguousarray(comp), np.ascontiguousarray(gt),
                     np.asarray(weights, np.float32), r.codec, level)

    def _jpeg(self, rng, gt):
        """(compressed, weights, level) of a ground-truth crop; no draw for a share of 0."""
        if self.light and rng.random() < self.light:
            return self._light(rng, gt)
        lo, hi = QF_RANGE
        low = self.low_qf and rng.random() < self.low_qf
        qf = int(rng.integers(lo, (LOW_QF_MAX if low else hi) + 1))
        return compress_jpeg(gt, qf)[0], exit_weights(severity("jpeg", qf), self.table), qf

    @staticmethod
    def _light(rng, gt):
        kind = rng.random()
        if kind < 0.25:
            return gt, LIGHT_EXIT_WEIGHTS, UNCOMPRESSED
        qf = int(rng.integers(LIGHT_QF_MIN, 101))
        if kind < 0.75:
            return compress_jpeg(gt, qf)[0], LIGHT_EXIT_WEIGHTS, qf
        first = int(rng.integers(QF_RANGE[0], 101))  # re-saved, as re-uploaded images are
        weights = LIGHT_EXIT_WEIGHTS if first >= LIGHT_QF_MIN else exit_weights(
            severity("jpeg", first))
        return compress_jpeg(compress_jpeg(gt, first)[0], qf)[0], weights, qf


def batches(sampler, start=0, workers=2):
    """Endless batches ``sampler(start)``, ``sampler(start + 1)``, … made ahead by a thread
    pool (OpenCV releases the GIL), in order."""
    with ThreadPoolExecutor(workers) as pool:
        pending = collections.deque(pool.submit(sampler, n) for n in
                                    range(start, start + 2 * workers))
        n = start + 2 * workers
        while True:
            yield pending.popleft().result()
            pending.append(pool.submit(sampler, n))
            n += 1


def validation_images(src_or_built, codec="jpeg", levels=None, crop=None):
    """Whole (or centre-cropped) validation images as a list of :class:`ValImage`.

    ``src_or_built``: a built folder (has ``manifest.jsonl``), or image folder(s)
    compressed here with OpenCV JPEG (HEVC needs a built set). ``levels``: None = all
    built levels / ``DEFAULT_LEVELS``. Order: ascending level, then name. ``crop``: a
    multiple of 32; each image is centre-cropped to at most crop x crop, its sides cut
    down to multiples of 32, its offset rounded down to the codec block grid so that the
    grid stays at the crop's origin (for JPEG, cropping a built image then equals
    compressing the crop).
    """
    check_codec(codec)
    if crop is not None:
        _check_multiple(crop, "crop")
    paths = [src_or_built] if isinstance(src_or_built, (str, Path)) else list(src_or_built)
    block = BLOCK_SIZE[codec]
    out = []
    if len(paths) == 1 and manifest_path(paths[0]).is_file():
        root, cache = Path(paths[0]), {}
        for rec in _manifest(root, (codec,), levels):
            gt = cache.get(rec["gt"])
            if gt is None:
                gt = cache[rec["gt"]] = _read_plane(root / rec["gt"])
            box = _centre_box(gt.shape, crop, block, rec["stem"])
            out.append(ValImage(_read_plane(root / rec["path"])[box], gt[box], codec,
                                rec["level"], rec["stem"]))
        return out
    if codec != "jpeg":
        raise ValueError(f"{codec} validation needs a built set (python -m datasets.build "
                         f"--codec {codec}); only JPEG is compressed on the fly")
    names, planes, _ = _load_y_images(paths)
    levels = sorted(DEFAULT_LEVELS["jpeg"] if levels is None else levels)
    for level in levels:
        severity("jpeg", level)  # range check
        for name, y in sorted(zip(names, planes), key=lambda t: t[0]):
            gt = np.ascontiguousarray(y[_centre_box(y.shape, crop, block, name)])
            out.append(ValImage(compress_jpeg(gt, int(level))[0], gt, codec, level, name))
    return out


def _check_multiple(size, what):
    if not (isinstance(size, (int, np.integer)) and size > 0 and size % SIZE_MULTIPLE == 0):
        raise ValueError(f"{what} must be a positive multiple of {SIZE_MULTIPLE} (the network "
                         f"downsamples 5 times by 2), got {size!r}")


def _dihedral(x, t):
    """Transform t in 0..7 of the square [P, P] x: bit 2 transposes, bits 0/1 flip rows/cols."""
    x = x.T if t >= 4 else x
    return np.flip(x, [a for a, bit in ((0, 1), (1, 2)) if t & bit])


def _centre_box(shape, crop, block, name):
    """Slices of the centre crop (see :func:`validation_images`); whole image if crop is None."""
    if crop is None:
        return slice(None), slice(None)
    sizes = [min(crop, s // SIZE_MULTIPLE * SIZE_MULTIPLE) for s in shape]
    if 0 in sizes:
        raise ValueError(f"{name}: {shape[0]}x{shape[1]} is too small for a crop of "
                         f"multiples of {SIZE_MULTIPLE}")
    starts = [(s - c) // 2 // block * block for s, c in zip(shape, sizes)]
    return tuple(slice(a, a + c) for a, c in zip(starts, sizes))


def _manifest(out_dir, codecs, levels):
    """Manifest records of ``codecs`` at ``levels``, sorted by (codec, level, stem)."""
    path = manifest_path(out_dir)
    if not path.is_file():
        raise ValueError(f"{out_dir}: no {path.name} (build the set with python -m datasets.build)")
    codecs = tuple(check_codec(c) for c in codecs)
    records = read_manifest(out_dir)
    selected = []
    for codec in codecs:
        wanted = levels.get(codec) if isinstance(levels, Mapping) else levels
        mine = [r for r in records if r["codec"] == codec
                and (wanted is None or r["level"] in wanted)]
        missing = set(wanted or ()) - {r["level"] for r in mine}
        if missing:
            raise ValueError(f"{path}: no {codec} records at level(s) {sorted(missing)}")
        if not mine:
            raise ValueError(f"{path}: no {codec} records")
        for r in mine:
            severity(codec, r["level"])  # range check
        selected += sorted(mine, key=lambda r: (r["level"], r["stem"]))
    return selected


def _read_plane(path):
    image = read_image(path)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit one-channel Y plane, got "
                         f"{image.dtype} {image.shape}")
    return image


def _try_read(path, skipped, shape=None):
    """The Y plane at ``path`` (of ``shape`` if given), or None after recording the
    problem in ``skipped[path]``."""
    try:
        image = _read_plane(path)
        if shape is not None and image.shape != shape:
            raise ValueError(f"{path}: size {image.shape} differs from its ground truth {shape}")
        return image
    except (ImageError, ValueError) as e:
        skipped[path] = str(e)
        return None


def _warn_skipped(reasons):
    reasons = list(reasons)
    if reasons:
        log.warning("skipped %d unreadable image(s): %s", len(reasons), "; ".join(reasons))


def _load_y_images(src_dirs):
    """Names, Y planes and "file: reason" of unreadable files under ``src_dirs``, by path."""
    dirs = [Path(src_dirs)] if isinstance(src_dirs, (str, Path)) else [Path(d) for d in src_dirs]
    names, planes, skipped = [], [], []
    for d in dirs:
        if not d.is_dir():
            raise ValueError(f"{d}: not a directory")
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() not in IMAGE_EXTENSIONS or f.name.startswith(".") or not f.is_file():
                continue
            try:
                planes.append(to_y(read_image(f)))
            except ImageError as e:
                skipped.append(str(e))
                continue
            names.append(f.relative_to(d).with_suffix("").as_posix())
    _warn_skipped(skipped)
    if not planes:
        raise ValueError(f"no readable images in {', '.join(map(str, dirs))}")
    return names, planes, skipped
