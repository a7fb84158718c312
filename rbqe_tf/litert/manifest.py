"""``manifest.json`` of an export folder: writing, reading and file-integrity checks.

NumPy and the standard library only (the runner reads it). Schema: docs/export.md.
A manifest may come from anyone, so :func:`read_manifest` checks every field a
runner reads (types, ranges, file paths confined to the folder) before use.
"""
import hashlib
import json
import math
import os
import re

from rbqe_tf.files import write_text

FORMAT = "rbqe-tflite"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# "quantize": the modes rbqe_tf.conversion.convert converts in (int8: every op, int8 or float32 I/O)
QUANT_MODES = ("fp32", "fp16", "int8_full_int8_io", "int8_full_fp32_io")
INT8_MODES = ("int8_full_int8_io", "int8_full_fp32_io")


class ManifestError(Exception):
    """A missing, foreign or inconsistent export folder (one-line message)."""


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _quantization(detail):
    scale, zero_point = detail["quantization"]
    if detail["dtype"].__name__ not in ("int8", "uint8", "int16") or scale == 0:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


def tensor_entries(details, names):
    """Manifest entries of interpreter I/O ``details`` (the interpreter's order).

    ``names`` maps a TFLite tensor name to its logical name (``y``, ``x_1_0``, ``exit``).
    """
    return [{"name": names[d["name"]], "tensor": d["name"], "index": int(d["index"]),
             "shape": [int(s) for s in d["shape"]], "dtype": d["dtype"].__name__,
             "quantization": _quantization(d)} for d in details]


def write_manifest(folder, manifest):
    """Writes ``manifest`` (a dict) as ``folder/manifest.json`` atomically."""
    write_text(os.path.join(folder, MANIFEST), json.dumps(
        {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}, indent=1) + "\n")


# rbqe_tf.levels.BLOCK_SIZE, which the runner does not import (a test checks they agree):
# the score model of a codec is built for its block size.
BLOCK_SIZE = {"jpeg": 8, "hevc": 4}
MAX_EXITS = 8
MAX_TILE = 4096
MAX_DIM = 1 << 16
MAX_BYTES = 1 << 24  # of manifest.json (an export's is ~30 KB)
DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32")
_SHA256 = re.compile("[0-9a-f]{64}")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_KEY = re.compile("[A-Za-z0-9_]+")
_KINDS = {"object": (dict, "an object"), "list": (list, "a list"), "string": (str, "a string"),
          "integer": (int, "an integer"), "number": ((int, float), "a finite number")}


def read_manifest(folder):
    """The manifest dict of export ``folder``, or ManifestError naming the file and field."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES >> 20} MiB")
        manifest = json.loads(data)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file (not an export folder written by "
                            "python -m export.tflite)") from None
    except (OSError, ValueError, RecursionError) as e:
        raise ManifestError(f"{path}: unreadable ({_one_line(e)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{path}: not an RBQE TFLite manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: format version {_show(manifest.get('format_version'))} is "
                            f"not supported (this runner reads version {FORMAT_VERSION})")
    _Fields(path).check(manifest, folder)
    return manifest


def _one_line(value, limit=100):
    text = _CONTROL.sub(" ", str(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _show(value):
    """``value`` as JSON, shortened to keep a message on one line."""
    return _one_line(json.dumps(value), 40)


class _Fields:
    """Checks a parsed manifest field by field; the first problem is a ManifestError
    ``<manifest>: <JSON path>: <problem>``."""

    def __init__(self, where):
        self.where = where

    def fail(self, field, problem):
        raise ManifestError(f"{self.where}: {field}: {problem}")

    def value(self, value, field, kind, lo=None, hi=None, choices=None):
        """``value`` after checking its JSON type (integers strictly, numbers finite, strings
        without control characters, which would break a message's line), range and allowed
        values."""
        types, name = _KINDS[kind]
        if (not isinstance(value, types) or isinstance(value, bool)
                or kind == "number" and not math.isfinite(value)):
            self.fail(field, f"expected {name}, got {_show(value)}")
        if kind == "string" and _CONTROL.search(value):
            self.fail(field, f"expected no control characters, got {_show(value)}")
        if choices is not None and value not in choices:
            expected = " or ".join(_show(c) for c in choices)
            self.fail(field, f"expected {expected}, got {_show(value)}")
        if lo is not None and value < lo or hi is not None and value > hi:
            bounds = f"in {lo}..{hi}" if hi is not None else f"≥ {lo}"
            self.fail(field, f"expected {name} {bounds}, got {_show(value)}")
        return value

    def item(self, obj, key, parent, kind, **limits):
        """``obj[key]`` (required) checked as :meth:`value`."""
        field = _field(parent, key)
        if key not in obj:
            self.fail(field, "missing")
        return self.value(obj[key], field, kind, **limits)

    def check(self, m, folder):
        """Every field a runner or the benchmark reads; informational ones (``model``,
        ``versions``, ``verification``, …) are left as they are."""
        num_exits = self.item(m, "num_exits", "", "integer", lo=1, hi=MAX_EXITS)
        multiple = self.item(m, "size_multiple", "", "integer", choices=(2 ** num_exits,))
        tile = self.item(m, "tile", "", "integer", lo=multiple, hi=MAX_TILE)
        if tile % multiple:
            self.fail("tile", f"expected a multiple of size_multiple {multiple}, got {tile}")
        self.item(m, "quantize", "", "string", choices=QUANT_MODES)
        codecs = self.item(m, "codecs", "", "list")
        if not codecs:
            self.fail("codecs", "expected at least one codec, got []")
        for i, codec in enumerate(codecs):
            self.value(codec, f"codecs[{i}]", "string", choices=tuple(BLOCK_SIZE))
        if len(set(codecs)) < len(codecs):
            self.fail("codecs", f"expected distinct codecs, got {_show(codecs)}")
        thresholds = self.item(m, "thresholds", "", "object")
        block_size = self.item(m, "block_size", "", "object")
        for codec in codecs:
            self.item(thresholds, codec, "thresholds", "number", lo=0, hi=1)
            self.item(block_size, codec, "block_size", "integer", choices=(BLOCK_SIZE[codec],))
        macs = self.item(m, "macs", "", "object")
        for key in ("per_exit", "per_stage"):
            counts = self.item(macs, key, "macs", "list")
            if len(counts) != num_exits:
                self.fail(f"macs.{key}", f"expected {num_exits} counts (num_exits), "
                                         f"got {len(counts)}")
            for i, count in enumerate(counts):
                self.value(count, f"macs.{key}[{i}]", "integer", lo=0)
        files = self.item(m, "files", "", "object")
        for name, entry in files.items():
            field = _field("files", name)
            self.file(entry, field, folder)
            for key in ("inputs", "outputs"):
                for i, tensor in enumerate(self.item(entry, key, field, "list")):
                    self.tensor(tensor, f"{field}.{key}[{i}]")
            if "bytes" in entry:
                self.item(entry, "bytes", field, "integer", lo=0)
        self.wiring(files, tile, num_exits, codecs)
        for codec, rule in self.item(m, "gain", "", "object").items() if "gain" in m else ():
            field = _field("gain", codec)
            if codec not in codecs:
                self.fail(field, f"not one of the export's codecs ({', '.join(codecs)})")
            self.file(rule, field, folder)
            self.item(rule, "margin", field, "number")
            self.item(rule, "tolerance", field, "number", lo=0)

    def wiring(self, files, tile, num_exits, codecs):
        """The logical tensors the runner binds: tile-sized ``y``/``exit`` inputs, stage
        inputs made by earlier stages, an ``exit`` from every stage and a patch map of the
        codec's block grid from every score model. (A model missing from ``files`` is
        reported when it is opened.)"""
        def names(entry, key):
            return [t["name"] for t in entry[key]]
        frame = [1, tile, tile, 1]
        for name, entry in files.items():
            for i, tensor in enumerate(entry["inputs"]):
                if tensor["name"] in ("y", "exit") and tensor["shape"] != frame:
                    self.fail(f"{_field('files', name)}.inputs[{i}].shape",
                              f"expected {frame} (the tile), got {_show(tensor['shape'])}")
        made = {"y"}
        for k in range(1, num_exits + 1):
            entry = files.get(f"stage_{k}")
            if entry is None:
                break
            unmade = [n for n in names(entry, "inputs") if n not in made]
            if unmade:
                self.fail(f"files.stage_{k}.inputs", f"{_show(unmade[0])} is not an output "
                                                     "of an earlier stage")
            if "exit" not in names(entry, "outputs"):
                self.fail(f"files.stage_{k}.outputs", "no \"exit\"")
            made.update(names(entry, "outputs"))
        for codec in codecs:
            entry = files.get(f"score_{codec}")
            side = tile // BLOCK_SIZE[codec] - 1
            if entry is not None and not (names(entry, "inputs") == ["exit"] and any(
                    t["name"] == "patches" and t["shape"] == [1, side, side, 3]
                    for t in entry["outputs"])):
                self.fail(f"files.score_{codec}", f"expected input \"exit\" and output "
                                                  f"\"patches\" [1, {side}, {side}, 3]")

    def file(self, entry, field, folder):
        """A {"path", "sha256"} entry: a path inside ``folder`` and a sha256 hex digest."""
        self.value(entry, field, "object")
        path = self.item(entry, "path", field, "string")
        if not _inside(folder, path):
            self.fail(f"{field}.path", f"{_show(path)} is not inside the export folder")
        if not _SHA256.fullmatch(self.item(entry, "sha256", field, "string")):
            self.fail(f"{field}.sha256", f"expected 64 lowercase hex digits, "
                                         f"got {_show(entry['sha256'])}")

    def tensor(self, tensor, field):
        """An interpreter I/O entry as :func:`tensor_entries` writes it."""
        self.value(tensor, field, "object")
        for key in ("name", "tensor"):
            self.item(tensor, key, field, "string")
        self.item(tensor, "index", field, "integer", lo=0)
        for i, size in enumerate(self.item(tensor, "shape", field, "list")):
            self.value(size, f"{field}.shape[{i}]", "integer", lo=1, hi=MAX_DIM)
        self.item(tensor, "dtype", field, "string", choices=DTYPES)
        if "quantization" not in tensor:
            self.fail(f"{field}.quantization", "missing")
        quantization = tensor["quantization"]
        if quantization is not None:
            q_field = f"{field}.quantization"
            self.value(quantization, q_field, "object")
            if self.item(quantization, "scale", q_field, "number") <= 0:
                self.fail(f"{q_field}.scale", f"expected a positive number, "
                                              f"got {_show(quantization['scale'])}")
            self.item(quantization, "zero_point", q_field, "integer", lo=-2 ** 31, hi=2 ** 31 - 1)


def _field(parent, key):
    """JSON path of ``key`` under ``parent``: ``files.stage_1.inputs[0]``."""
    if _KEY.fullmatch(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{_show(key)}]"


def _inside(folder, relative):
    """Whether ``relative`` is a relative path that stays inside ``folder`` once ``..``
    and symbolic links are resolved."""
    root = os.path.realpath(folder)
    return (not os.path.isabs(relative)
            and os.path.commonpath([root, os.path.realpath(os.path.join(root, relative))]) == root)


def checked_path(folder, manifest, name):
    """Path of model ``name`` after checking that its sha256 matches the manifest."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise ManifestError(f"{folder}: manifest lists no model {name!r}")
    return checked_entry(folder, entry)


def _located(folder, entry):
    path = os.path.join(folder, entry["path"])
    if not _inside(folder, entry["path"]):
        raise ManifestError(f"{path}: not inside the export folder (listed in {MANIFEST})")
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: missing (listed in {MANIFEST})")
    return path


def _check_digest(path, actual, entry):
    if actual != entry["sha256"]:
        raise ManifestError(f"{path}: sha256 {actual[:12]}… does not match the manifest "
                            f"({entry['sha256'][:12]}…); the file was changed or belongs to "
                            "another export; re-export or restore it")


def checked_entry(folder, entry):
    """Path of the file a manifest ``entry`` ({"path", "sha256"}) names, after checking
    that it lies inside ``folder``, exists and its sha256 matches (never hashing a file
    outside the folder)."""
    path = _located(folder, entry)
    _check_digest(path, sha256_file(path), entry)
    return path


def checked_bytes(folder, manifest, name):
    """The bytes of model ``name``, checked as :func:`checked_path` checks the file.

    The bytes themselves are hashed, so a model opened from them later (the runner
    opens its interpreters only when first needed) is the one that was checked even
    if the file changes in between."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise ManifestError(f"{folder}: manifest lists no model {name!r}")
    path = _located(folder, entry)
    with open(path, "rb") as f:
        data = f.read()
    _check_digest(path, hashlib.sha256(data).hexdigest(), entry)
    return data
