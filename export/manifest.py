"""``manifest.json`` of an export folder: writing, reading and file-integrity checks.

NumPy and the standard library only (the runner reads it). Schema: docs/export.md.
"""
import hashlib
import json
import os

FORMAT = "rbqe-tflite"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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
    path = os.path.join(folder, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


REQUIRED = ("files", "tile", "num_exits", "codecs", "thresholds", "block_size", "quantize")


def read_manifest(folder):
    """The manifest dict of export ``folder``, or ManifestError."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file (not an export folder written by "
                            "python -m export.tflite)") from None
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path}: unreadable ({e})") from None
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"{path}: not an RBQE TFLite manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: format version {manifest.get('format_version')} is not "
                            f"supported (this runner reads version {FORMAT_VERSION})")
    missing = [key for key in REQUIRED if key not in manifest]
    files = manifest.get("files")
    if not missing and not (isinstance(files, dict) and all(
            isinstance(e, dict) and {"path", "sha256"} <= set(e) for e in files.values())):
        missing = ["files[…].path/sha256"]
    if missing:
        raise ManifestError(f"{path}: incomplete manifest (missing {', '.join(missing)})")
    return manifest


def checked_path(folder, manifest, name):
    """Path of model ``name`` after checking that its sha256 matches the manifest."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise ManifestError(f"{folder}: manifest lists no model {name!r}")
    return checked_entry(folder, entry)


def checked_entry(folder, entry):
    """Path of the file a manifest ``entry`` ({"path", "sha256"}) names, after checking
    that it exists and its sha256 matches."""
    path = os.path.join(folder, entry["path"])
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: missing (listed in {MANIFEST})")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ManifestError(f"{path}: sha256 {actual[:12]}… does not match the manifest "
                            f"({entry['sha256'][:12]}…); the file was changed or belongs to "
                            "another export; re-export or restore it")
    return path
