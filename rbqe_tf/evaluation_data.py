"""Finding the images to evaluate: a folder of lossless ground truths or a built set.

Light (no TensorFlow), so that the command line reports bad data before loading a model.
"""
import dataclasses
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rbqe_tf import compression
from rbqe_tf.compression import CodecError, compress, ffmpeg_problem
from rbqe_tf.image_io import ImageError, read_image
from rbqe_tf.levels import DEFAULT_LEVELS, UNCOMPRESSED
from rbqe_tf.pairs_manifest import manifest_path, read_manifest
from rbqe_tf.sources import LOSSLESS_SUFFIXES, list_sources, stem_of, to_y

MIN_SIDE = 11  # the SSIM window


class DataError(Exception):
    """A data folder or level list that cannot be evaluated at all (one-line message)."""


@dataclasses.dataclass
class Source:
    """One ground-truth image; ``load()`` → (gt uint8 [H, W], {level: decoded uint8})."""

    name: str
    load: Callable


def parse_levels(codec, levels):
    """:func:`rbqe_tf.compression.parse_levels` with "none" allowed; DataError otherwise."""
    try:
        return compression.parse_levels(codec, levels, uncompressed=True)
    except ValueError as e:
        raise DataError(str(e)) from None


def find_sources(data_dir, codec, levels=None):
    """Ground truths of ``data_dir`` → (levels, [Source], skipped one-line reasons).

    ``data_dir`` is a built set (has manifest.jsonl; levels default to all built ones)
    or a folder of lossless images (recursive; colour → BT.601 Y, gray as is),
    compressed here with ``rbqe_tf.compression`` (levels default to ``DEFAULT_LEVELS``).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    levels = None if levels is None else parse_levels(codec, levels)
    try:
        if manifest_path(root).is_file():
            return _built_sources(root, codec, levels)
        files = list_sources(root)
    except OSError as e:
        raise DataError(f"{root}: cannot read ({e.strerror or e})") from None
    if not files:
        raise DataError(f"{root}: no lossless images ({', '.join(LOSSLESS_SUFFIXES)}) "
                        "and no manifest.jsonl")
    if codec == "hevc" and (problem := ffmpeg_problem()):
        raise DataError(problem)
    levels = levels or list(DEFAULT_LEVELS[codec])
    sources, skipped, seen = [], [], set()
    for path in files:
        stem = stem_of(path, root)
        if stem in seen:
            skipped.append(f"{path}: another image has the same name {stem!r}")
            continue
        seen.add(stem)
        sources.append(Source(stem, lambda path=path: _compressed_source(path, codec, levels)))
    return levels, sources, skipped


def make_input(codec, gt, level):
    """The decoded input of uint8 Y ``gt`` at ``level`` (``UNCOMPRESSED``: ``gt`` itself)."""
    return gt if level == UNCOMPRESSED else compress(codec, gt, level)[0]


def _compressed_source(path, codec, levels):
    gt = _checked(to_y(read_image(path)), path)
    try:
        return gt, {level: make_input(codec, gt, level) for level in levels}
    except CodecError as e:
        raise ImageError(f"{path}: {e}") from None


def _built_sources(root, codec, levels):
    try:
        rows = [r for r in read_manifest(root) if r["codec"] == codec]
    except ValueError as e:
        raise DataError(str(e)) from None
    built = sorted({r["level"] for r in rows})
    if not rows:
        raise DataError(f"{manifest_path(root)}: no {codec} pairs")
    missing = sorted(set(levels or ()) - set(built))
    if missing:
        raise DataError(f"{manifest_path(root)}: no {codec} pairs at level(s) "
                        f"{', '.join(map(str, missing))} (built: {', '.join(map(str, built))})")
    levels = levels or built
    by_stem = defaultdict(dict)
    for r in rows:
        if r["level"] in levels:
            by_stem[r["stem"]][r["level"]] = r
    sources, skipped = [], []
    for stem, found in sorted(by_stem.items()):
        if len(found) < len(levels):
            absent = ", ".join(str(lv) for lv in levels if lv not in found)
            skipped.append(f"{stem}: not built at level(s) {absent}")
            continue
        sources.append(Source(stem, lambda found=found: _built_source(root, found, levels)))
    return levels, sources, skipped


def _built_source(root, rows, levels):
    gt = _checked(_plane(root / rows[levels[0]]["gt"]), root / rows[levels[0]]["gt"])
    decoded = {}
    for level in levels:
        path = root / rows[level]["path"]
        decoded[level] = _plane(path)
        if decoded[level].shape != gt.shape:
            raise ImageError(f"{path}: size {decoded[level].shape} differs from its ground "
                             f"truth's {gt.shape}")
    return gt, decoded


def _plane(path):
    image = read_image(path)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ImageError(f"{path}: expected an 8-bit one-channel Y plane, got "
                         f"{image.dtype} {image.shape}")
    return image


def _checked(y, path):
    if min(y.shape) < MIN_SIDE:
        raise ImageError(f"{path}: {y.shape[0]}x{y.shape[1]} is smaller than SSIM's "
                         f"{MIN_SIDE}x{MIN_SIDE} window")
    return y
