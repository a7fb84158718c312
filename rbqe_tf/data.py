"""tf.data input pipelines: random aligned training patches and deterministic validation images.

Training elements are ``(compressed, target, severity)``: float32 [P, P, 1] in [0, 1],
float32 [P, P, 1] and a float32 scalar on the :func:`rbqe_tf.levels.severity` axis
(batched: [B, P, P, 1], [B, P, P, 1], [B]). Sources:

* :func:`from_built` — pairs written by ``python -m datasets.build`` (JPEG, HEVC or both);
* :func:`on_the_fly_jpeg` — ground truth compressed per patch at a random quality factor
  (uniform, or with a ``low_qf`` share drawn from QF 10..20).

Design:

* Every element is a pure function of ``(seed, element index)``: stateless RNG keyed by
  ``[seed, index]``, images held as in-memory tensors, JPEG as a TF op. No
  ``numpy_function``/``from_generator``, so ``tf.train.Checkpoint(iterator=...)`` works,
  and ``start_index`` reproduces the stream without a checkpoint. Patches are drawn
  i.i.d. with replacement, which makes a shuffle buffer unnecessary.
* A record (built: one image at one codec level; on the fly: one image) is drawn with
  probability proportional to its area, so every pixel is seen about equally often
  (uniform per image would oversample the small T91/Train400 images ~5x relative to
  BSD). Built sets hold every image at every level, so levels come out uniform.
* Crop offsets of built pairs are multiples of the codec block size (8 JPEG, 4 HEVC):
  the blocking grid sits at the patch origin, as it does at inference on whole images
  (padded bottom/right) where the blind quality score assumes it. P is a multiple of
  32, so flips and 90° rotations keep the grid aligned. On-the-fly JPEG compresses the
  crop itself, which also puts the grid at the patch origin.
* Images smaller than the patch are skipped with a warning giving their count and names
  (reflection padding would invent content and mirrored block artefacts).
* Unreadable files (corrupt, truncated, missing, wrong plane type or size) are skipped
  too: one warning names each once, and the source's ``skipped`` ("file: reason")
  gives the trainer the count. Every image is read once, when the source is loaded,
  so a file damaged later cannot disturb the running stream; a resumed run re-reads
  the files, skips what has become unreadable, and then sees a different stream.
* On-the-fly JPEG uses ``EncodeJpegVariableQuality`` + ``decode_jpeg(INTEGER_ACCURATE)``,
  whose decoded pixels equal OpenCV's (the project's reference encoder; the bytes
  differ only in the JFIF density field). The default ``decode_jpeg`` DCT (IFAST) does not.
"""
import collections
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from rbqe_tf.compression import compress_jpeg
from rbqe_tf.image_io import ImageError, read_image
from rbqe_tf.levels import BLOCK_SIZE, DEFAULT_LEVELS, LOW_QF_MAX, check_codec, severity
from rbqe_tf.pairs_manifest import manifest_path, read_manifest
from rbqe_tf.sources import to_y

log = logging.getLogger(__name__)

SIZE_MULTIPLE = 32  # the network downsamples 5 times by 2
IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}

ValImage = collections.namedtuple("ValImage", "compressed gt codec level name")
ValImage.__doc__ = "One validation image: uint8 [H, W] compressed and ground-truth Y planes."


class _Planes:
    """uint8 2-D images packed into one flat buffer (one tensor; crops are two slices)."""

    def __init__(self, images):
        self.shapes = np.array([im.shape for im in images], np.int64).reshape(-1, 2)
        self.offsets = np.concatenate([[0], np.cumsum(self.shapes.prod(1))[:-1]]).astype(np.int64)
        self.buffer = np.concatenate([im.ravel() for im in images]).astype(np.uint8, copy=False)

    def __len__(self):
        return len(self.shapes)

    def __getitem__(self, i):
        (h, w), o = self.shapes[i], self.offsets[i]
        return self.buffer[o:o + h * w].reshape(h, w)


@dataclasses.dataclass(frozen=True, eq=False)
class BuiltPairs:
    """Built (compressed, ground truth) pairs in memory; record i = ``compressed[i]``."""

    gt: _Planes  # one plane per distinct ground truth
    compressed: _Planes
    gt_index: np.ndarray  # int64 [N]: record → gt plane
    codecs: tuple
    levels: tuple
    names: tuple
    grid_aligned: bool = True
    skipped: tuple = ()  # "file: reason" of unreadable files

    def _geometry(self):
        step = [BLOCK_SIZE[c] if self.grid_aligned else 1 for c in self.codecs]
        return np.column_stack([self.compressed.shapes, step]), self.names

    def _patch_fn(self, size):
        gt_buf, comp_buf = tf.constant(self.gt.buffer), tf.constant(self.compressed.buffer)
        gt_off = tf.constant(self.gt.offsets[self.gt_index])
        comp_off = tf.constant(self.compressed.offsets)
        sev = tf.constant([severity(c, q) for c, q in zip(self.codecs, self.levels)], tf.float32)

        def patch(r, y0, x0, width, key):
            del key
            return (_crop(comp_buf, comp_off[r], width, y0, x0, size),
                    _crop(gt_buf, gt_off[r], width, y0, x0, size), sev[r])
        return patch


@dataclasses.dataclass(frozen=True, eq=False)
class JpegOnTheFly:
    """Ground-truth Y images in memory, JPEG-compressed per patch at a random QF."""

    gt: _Planes
    names: tuple
    qf_range: tuple
    skipped: tuple  # "file: reason" of unreadable images
    low_qf: float = 0.0  # share of patches whose QF comes from lo..LOW_QF_MAX

    def _geometry(self):
        return np.column_stack([self.gt.shapes, np.ones(len(self.gt), np.int64)]), self.names

    def _patch_fn(self, size):
        buf, offsets = tf.constant(self.gt.buffer), tf.constant(self.gt.offsets)
        lo, hi = self.qf_range
        sev_table = tf.constant([severity("jpeg", q) for q in range(lo, hi + 1)], tf.float32)

        def patch(r, y0, x0, width, key):
            gt = _crop(buf, offsets[r], width, y0, x0, size)
            if self.low_qf:  # else the stream is the same as before the option existed
                pick, key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
                low = tf.random.stateless_uniform([], pick) < self.low_qf
                qf = lo + _randint(key, tf.where(low, min(hi, LOW_QF_MAX), hi) - lo + 1)
            else:
                qf = lo + _randint(key, hi - lo + 1)
            jpeg = tf.raw_ops.EncodeJpegVariableQuality(images=gt, quality=tf.cast(qf, tf.int32))
            comp = tf.io.decode_jpeg(jpeg, channels=1, dct_method="INTEGER_ACCURATE")
            return tf.ensure_shape(comp, [size, size, 1]), gt, sev_table[qf - lo]
        return patch


def from_built(out_dir, codecs=("jpeg",), levels=None, grid_aligned=True):
    """Loads the pairs of ``codecs`` at ``levels`` from built set(s) into memory.

    ``out_dir``: a ``datasets.build`` output folder or a list of them (e.g. one per
    codec). ``levels``: None (all in the manifest), a sequence for every codec, or a
    mapping codec → sequence (a codec it lacks: all levels). Each ground truth is held
    once. ``grid_aligned``: crop offsets on the codec block grid (see module doc).
    Records whose compressed or ground-truth file is unreadable are skipped (module doc).
    """
    out_dirs = [out_dir] if isinstance(out_dir, (str, Path)) else list(out_dir)
    records = [(Path(d), rec) for d in out_dirs for rec in _manifest(Path(d), codecs, levels)]
    gt_index, gts, comps, kept, skipped = {}, [], [], [], {}
    for d, rec in records:
        key = (d / rec["gt"]).resolve()
        if key not in gt_index and key not in skipped:
            gt = _try_read(key, skipped)
            if gt is not None:
                gt_index[key] = len(gts)
                gts.append(gt)
        if key not in gt_index:
            continue
        comp = _try_read(d / rec["path"], skipped, gts[gt_index[key]].shape)
        if comp is not None:
            comps.append(comp)
            kept.append((rec, gt_index[key]))
    _warn_skipped(skipped.values())
    if not kept:
        raise ValueError(f"no readable pairs in {', '.join(map(str, out_dirs))}")
    return BuiltPairs(
        gt=_Planes(gts), compressed=_Planes(comps),
        gt_index=np.array([i for _, i in kept], np.int64),
        codecs=tuple(r["codec"] for r, _ in kept), levels=tuple(r["level"] for r, _ in kept),
        names=tuple(r["stem"] for r, _ in kept), grid_aligned=grid_aligned,
        skipped=tuple(skipped.values()))


def on_the_fly_jpeg(src_dirs, qf_range=(10, 50), low_qf=0.0):
    """Loads the images under ``src_dirs`` (recursively) as Y planes for on-the-fly JPEG.

    Colour → BT.601 Y, gray as is; unreadable files are skipped with a warning. Each
    patch gets a quality factor drawn uniformly from the integers in ``qf_range``, or,
    for a ``low_qf`` share of patches, from ``qf_range[0]``..20 (the shipped model's
    QF 10–20 emphasis).
    """
    lo, hi = qf_range
    if not all(isinstance(q, (int, np.integer)) for q in (lo, hi)) or lo > hi:
        raise ValueError(f"qf_range must be two integers lo <= hi, got {qf_range!r}")
    for qf in (lo, hi):
        severity("jpeg", qf)  # range check
    if not 0.0 <= low_qf <= 1.0 or (low_qf and lo > LOW_QF_MAX):
        raise ValueError(f"low_qf must be in [0, 1] (and qf_range start at <= {LOW_QF_MAX}), "
                         f"got {low_qf!r} with {qf_range!r}")
    names, planes, skipped = _load_y_images(src_dirs)
    return JpegOnTheFly(gt=_Planes(planes), names=tuple(names), qf_range=(lo, hi),
                        skipped=tuple(skipped), low_qf=float(low_qf))


def make_train_dataset(source, patch_size=128, batch_size=16, seed=0, start_index=0,
                       augment=True):
    """Endless batched ``(compressed, target, severity)`` training dataset from ``source``.

    Element i (counting from 0 at the stream's start) depends only on ``(seed, i)``;
    ``start_index`` starts at element i, e.g. ``step * batch_size`` to resume at a step.
    ``augment``: one of the 8 flips/rotations, the same for both planes.
    """
    _check_multiple(patch_size, "patch size")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    geometry, names = source._geometry()
    fits = (geometry[:, :2] >= patch_size).all(1)
    if not fits.all():
        small = sorted({n for n, ok in zip(names, fits) if not ok})
        log.warning("skipping %d image(s) smaller than %dx%d: %s", len(small), patch_size,
                    patch_size, ", ".join(small))
    if not fits.any():
        raise ValueError(f"no image is at least {patch_size}x{patch_size}")
    cum_area = tf.constant(np.cumsum(np.where(fits, geometry[:, 0] * geometry[:, 1], 0)))
    geometry = tf.constant(geometry)
    patch = source._patch_fn(patch_size)
    seed = tf.constant(seed, tf.int64)

    def element(index):
        keys = tf.random.experimental.stateless_split(tf.stack([seed, index]), 5)
        r = tf.searchsorted(cum_area, _randint(keys[0], cum_area[-1])[None], side="right")[0]
        h, w, step = tf.unstack(geometry[r])
        y0 = step * _randint(keys[1], (h - patch_size) // step + 1)
        x0 = step * _randint(keys[2], (w - patch_size) // step + 1)
        comp, gt, sev = patch(r, y0, x0, w, keys[3])
        pair = tf.concat([comp, gt], -1)
        if augment:
            pair = _dihedral(pair, _randint(keys[4], 8))
        pair = tf.cast(pair, tf.float32) / 255.0
        return pair[..., :1], pair[..., 1:], sev

    ds = tf.data.Dataset.range(start_index, np.iinfo(np.int64).max)
    ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


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


def _randint(key, n):
    """Stateless uniform int64 in [0, n)."""
    return tf.random.stateless_uniform([], key, 0, tf.cast(n, tf.int64), dtype=tf.int64)


def _crop(buffer, offset, width, y0, x0, size):
    """[size, size, 1] crop at (y0, x0) of the image stored at ``offset`` in ``buffer``."""
    rows = tf.reshape(tf.slice(buffer, [offset + y0 * width], [size * width]), [size, width])
    return tf.slice(rows, [0, x0], [size, size])[..., None]


def _dihedral(x, t):
    """Transform t in 0..7 of the square [P, P, C] x: bit 2 transposes, bits 0/1 flip rows/cols."""
    x = tf.transpose(x, tf.where(t >= 4, [1, 0, 2], [0, 1, 2]))
    return tf.reverse(x, tf.boolean_mask([0, 1], [t % 2 == 1, t // 2 % 2 == 1]))


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
            if f.suffix.lower() not in IMAGE_SUFFIXES or f.name.startswith(".") or not f.is_file():
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
