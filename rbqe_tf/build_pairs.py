"""Building ground-truth Y images and their decoded JPEG/HEVC versions, with a manifest:
the engine of ``python -m datasets.build`` (:func:`build`), inside the package so that an
installed wheel can build training pairs too (the ``datasets`` folder, a repository
command like ``benchmarks``, is not installed: Hugging Face's ``datasets`` owns that
top-level name).

For every lossless image under ``src`` (recursive, sorted) it writes
``OUT/gt/<stem>.png`` (uint8 Y, see ``rbqe_tf.sources``) and, per level,
``OUT/<codec>/<level>/<stem>.png`` (the decoded compressed Y, see
``rbqe_tf.compression``), and appends a row to ``OUT/manifest.jsonl`` (see
``rbqe_tf.pairs_manifest``). Both codecs can be built into the same OUT.

Resumable: pairs with a manifest row whose files exist are skipped; files are
written atomically (temp + rename) and a row only after its files, so a killed
run leaves nothing half-done; leftover ``.tmp-*`` files and rows whose files are
missing are cleaned up at the next start. One build at a time per OUT (a lock
file).
"""
import fcntl
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rbqe_tf.compression import CodecError, compress, ffmpeg_problem
from rbqe_tf.compression import parse_levels as parse_codec_levels
from rbqe_tf.files import TEMP_PREFIX
from rbqe_tf.image_io import ImageError, read_image, write_image
from rbqe_tf.levels import CODECS, DEFAULT_LEVELS
from rbqe_tf.metrics import psnr, ssim
from rbqe_tf.pairs_manifest import (append_row, manifest_path, read_manifest, row_key,
                                    write_manifest)
from rbqe_tf.sources import list_sources, stem_of, to_y

LOCK_NAME = ".build.lock"


class BuildError(Exception):
    """A one-line problem that stops the whole build (exit status 2)."""


@dataclass
class Summary:
    """What one build did, and the dataset's per-level statistics afterwards."""
    codec: str
    out: Path
    built: int = 0
    already_done: int = 0
    skipped: list = field(default_factory=list)  # one-line reasons
    per_level: dict = field(default_factory=dict)  # level -> (images, psnr, ssim, bpp)

    def format(self):
        lines = [f"{self.codec} into {self.out}: built {self.built} pair(s), "
                 f"{self.already_done} already done, skipped {len(self.skipped)} source(s)",
                 "level  images  mean input PSNR (dB)  mean SSIM  mean bpp"]
        for level, (n, p, s, b) in sorted(self.per_level.items()):
            lines.append(f"{level:>5}  {n:>6}  {p:>20.3f}  {s:>9.4f}  {b:>8.3f}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} source(s):")
            lines.extend(f"  {reason}" for reason in self.skipped)
        return "\n".join(lines)


def parse_levels(codec, levels):
    """Validates levels (default: ``DEFAULT_LEVELS[codec]``) → sorted unique ints."""
    if codec not in CODECS:
        raise BuildError(f"unknown codec {codec!r} (expected one of {', '.join(CODECS)})")
    try:
        return parse_codec_levels(codec, levels) if levels else list(DEFAULT_LEVELS[codec])
    except ValueError as e:
        raise BuildError(str(e)) from None


def _lock(out):
    handle = open(out / LOCK_NAME, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BuildError(f"another build is writing to {out}; wait for it to finish") from None
    return handle


def _remove_temp_files(out):
    leftovers = list(out.glob(TEMP_PREFIX + "*"))
    for top in ("gt", *CODECS):
        leftovers += (out / top).rglob(TEMP_PREFIX + "*")
    for path in leftovers:
        path.unlink(missing_ok=True)


def _load_finished(out):
    """Manifest rows whose files exist; rewrites the manifest if it had others or a torn line."""
    try:
        rows = read_manifest(out)
    except ValueError as e:
        raise BuildError(f"{e}; fix or delete the manifest") from None
    kept = [r for r in rows if (out / r["gt"]).is_file() and (out / r["path"]).is_file()]
    raw = manifest_path(out).read_bytes() if manifest_path(out).is_file() else b""
    torn = raw and not raw.endswith(b"\n")
    if len(kept) != len(rows) or torn:
        write_manifest(out, kept)
    return kept


def _ensure_gt(path, y):
    """Writes the ground truth, or checks an existing one matches ``y``."""
    if path.is_file():
        if not np.array_equal(read_image(path), y):
            raise ImageError(f"{path} differs from its source's Y (the source changed?); "
                             f"delete it and its compressed versions to rebuild")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, y)


class _Builder:
    """Per-run state shared by worker threads; rows are appended under a lock."""

    def __init__(self, src, out, codec):
        self.src, self.out, self.codec = src, out, codec
        self.lock = threading.Lock()
        self.new_rows = []

    def build_source(self, source, levels):
        stem = stem_of(source, self.src)
        y = to_y(read_image(source))
        gt = f"gt/{stem}.png"
        _ensure_gt(self.out / gt, y)
        height, width = y.shape
        for level in levels:
            decoded, n_bytes = compress(self.codec, y, level)
            rel = f"{self.codec}/{level}/{stem}.png"
            row = {"stem": stem, "source": source.relative_to(self.src).as_posix(),
                   "codec": self.codec, "level": level, "gt": gt, "path": rel,
                   "height": height, "width": width, "bytes": n_bytes,
                   "bpp": n_bytes * 8.0 / (height * width),
                   "psnr": psnr(y, decoded), "ssim": ssim(y, decoded)}
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            write_image(self.out / rel, decoded, overwrite=True)
            with self.lock:
                append_row(self.out, row)
                self.new_rows.append(row)


def _plan(src, sources, done, codec, levels, summary):
    """(source, levels still to build) per source; duplicate stems are skipped."""
    jobs, seen = [], set()
    for source in sources:
        stem = stem_of(source, src)
        if stem in seen:
            summary.skipped.append(f"{source}: another source has the same stem {stem!r}")
            continue
        seen.add(stem)
        todo = [lv for lv in levels if (codec, lv, stem) not in done]
        summary.already_done += len(levels) - len(todo)
        if todo:
            jobs.append((source, todo))
    return jobs


def _level_stats(rows, codec, levels):
    stats = {}
    for level in levels:
        sel = [r for r in rows if r["codec"] == codec and r["level"] == level]
        if sel:
            stats[level] = (len(sel), float(np.mean([r["psnr"] for r in sel])),
                            float(np.mean([r["ssim"] for r in sel])),
                            float(np.mean([r["bpp"] for r in sel])))
    return stats


def build(src, out, codec, levels=None, workers=None, progress=False):
    """Builds (or completes) the dataset in ``out``; returns a :class:`Summary`.

    Raises BuildError for problems that stop the whole build; a source that
    cannot be read or compressed is skipped and listed in the summary.
    """
    src, out = Path(src), Path(out)
    levels = parse_levels(codec, levels)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    if not src.is_dir():
        raise BuildError(f"source directory {src} does not exist")
    if codec == "hevc" and (problem := ffmpeg_problem()):
        raise BuildError(problem)
    sources = list_sources(src)
    if not sources:
        raise BuildError(f"no lossless images (png, bmp, tif, ppm/pgm) under {src}")
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary(codec, out)
    lock = _lock(out)
    try:
        _remove_temp_files(out)
        rows = _load_finished(out)
        jobs = _plan(src, sources, {row_key(r) for r in rows}, codec, levels, summary)
        builder = _Builder(src, out, codec)
        pool = ThreadPoolExecutor(max(1, min(workers, len(jobs))))
        try:
            futures = {pool.submit(builder.build_source, s, lv): s for s, lv in jobs}
            for future in tqdm(as_completed(futures), total=len(futures), unit="image",
                               desc=f"{codec} {src.name}", disable=not progress,
                               file=sys.stderr):
                try:
                    future.result()
                except ImageError as e:
                    summary.skipped.append(str(e))
                except (CodecError, ValueError, OSError) as e:
                    summary.skipped.append(f"{futures[future]}: {e}")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if builder.new_rows:
                rows += builder.new_rows
                write_manifest(out, rows)
        summary.built = len(builder.new_rows)
        summary.per_level = _level_stats(rows, codec, levels)
    finally:
        lock.close()
    return summary
