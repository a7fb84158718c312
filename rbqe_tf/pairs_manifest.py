"""OUT/manifest.jsonl: one JSON object per finished (image, codec, level) pair, written
by ``python -m datasets.build`` and read by ``rbqe_tf.data`` and ``rbqe_tf.evaluation_data``.

Row fields (the contract with the tf.data pipeline): ``stem`` (source path
relative to --src without suffix, POSIX), ``source`` (path relative to --src),
``codec`` ('jpeg' | 'hevc'), ``level`` (JPEG quality or HEVC QP), ``gt`` and
``path`` (uint8 Y PNGs relative to OUT: ``gt/<stem>.png`` and
``<codec>/<level>/<stem>.png``), ``height``, ``width``, ``bytes`` (compressed
bitstream size), ``bpp`` (bytes·8 / (height·width)), ``psnr``, ``ssim``
(compressed vs ground truth, ``rbqe_tf.metrics``; psnr is ``Infinity`` for an
exact reconstruction, which Python's json reads as inf).

A row is appended only after both of its files are in place, so every row
names existing files. A run killed while appending can leave an unterminated
last line; readers ignore it and the next build removes it.
"""
import json
from pathlib import Path

from rbqe_tf.files import write_text

MANIFEST_NAME = "manifest.jsonl"
FIELDS = ("stem", "source", "codec", "level", "gt", "path", "height", "width",
          "bytes", "bpp", "psnr", "ssim")


def manifest_path(out_dir):
    return Path(out_dir) / MANIFEST_NAME


def row_key(row):
    """Identity of a row, also its sort order: (codec, level, stem)."""
    return row["codec"], row["level"], row["stem"]


def read_manifest(out_dir):
    """Rows of ``out_dir``/manifest.jsonl as dicts, in file order ([] if there is none).

    Raises ValueError naming file and line for a malformed complete line.
    """
    path = manifest_path(out_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    lines.pop()  # "" after the final newline, or an unterminated (torn) last line
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ValueError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        rows.append(row)
    return rows


def format_row(row):
    return json.dumps({f: row[f] for f in FIELDS}) + "\n"


def append_row(out_dir, row):
    """Appends one row with a single write (callers serialise concurrent appends)."""
    with open(manifest_path(out_dir), "a", encoding="utf-8") as f:
        f.write(format_row(row))


def write_manifest(out_dir, rows):
    """Replaces the manifest atomically with ``rows`` sorted by :func:`row_key`."""
    write_text(manifest_path(out_dir), "".join(format_row(r) for r in sorted(rows, key=row_key)))
