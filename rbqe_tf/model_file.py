"""What a ``.keras`` RBQE model file may hold, checked before Keras reads any of it.

Keras builds whatever a file's ``config.json`` names (constructors run, variables are
allocated) and reads members whole, so a hostile file could call library functions,
build a network too large to finish, or inflate gigabytes before anything refuses it.
Here the zip directory bounds every member's declared size first (``zipfile`` never
inflates past a declared size: a lie fails the CRC); ``config.json`` must then describe
this project's RBQE, every value type- and range-checked; and the weights' HDF5
datasets must declare no more data than the member limit. Anything else is a one-line
WeightsError naming the file and the field. No TensorFlow or Keras here.
"""
import dataclasses
import io
import json
import os
import re
import zipfile
import zlib

import h5py

from rbqe_tf.config import RBQEConfig


class WeightsError(Exception):
    """A weights file that is missing, unreadable or not an RBQE model."""


FILE_FORMAT = 1  # bump when a saved file's meaning changes; newer files are refused

# Limits, generous: the variants have 1 channel, 4 or 32 features and 6 levels; the
# shipped model is 1.7 MB with a 431-byte config.json.
RANGES = {"channels": (1, 4), "features": (1, 128), "num_levels": (2, 8)}
MAX_INPUT_SIDE = 1 << 16
MAX_NAME_CHARS = 128
MAX_CONFIG_BYTES = 1 << 20  # config.json, metadata.json
MAX_WEIGHTS_BYTES = 64 << 20  # twice the largest architecture RANGES admit (7.6 M float32 weights)
CONFIG, WEIGHTS = "config.json", "model.weights.h5"
MEMBERS = {"metadata.json": MAX_CONFIG_BYTES, CONFIG: MAX_CONFIG_BYTES, WEIGHTS: MAX_WEIGHTS_BYTES}
MAX_FILE_BYTES = sum(MEMBERS.values()) + (1 << 20)  # also bounds the zip directory's parse

_IDENTITY = {"class_name": "RBQE", "module": "rbqe_tf.model", "registered_name": "rbqe_tf>RBQE"}
_IGNORED = ("build_config", "compile_config")  # a functional model is built; loads skip compiling


def _int_in(low, high):
    return lambda v: type(v) is int and low <= v <= high, f"an integer in {low}..{high}"


_BOOL = (lambda v: type(v) is bool, "true or false")
_SETTINGS = {  # saved model setting → (accepts, what it must be)
    **{f.name: _BOOL if isinstance(f.default, bool) else _int_in(*RANGES[f.name])
       for f in dataclasses.fields(RBQEConfig)},
    "input_size": (lambda v: isinstance(v, list) and len(v) == 2 and all(
        s is None or type(s) is int and 1 <= s <= MAX_INPUT_SIDE for s in v),
        f"[height, width], each null or 1..{MAX_INPUT_SIDE}"),
    "name": (lambda v: isinstance(v, str) and 0 < len(v) <= MAX_NAME_CHARS and v.isprintable(),
             f"1..{MAX_NAME_CHARS} printable characters"),
    "trainable": _BOOL,
    "format": _int_in(0, FILE_FORMAT),
    "weights_digest": (lambda v: v is None or isinstance(v, str) and re.fullmatch(
        "[0-9a-f]{64}", v) is not None, "null or a sha256 hex digest"),
}


def _show(value):
    """A short one-line rendering of a JSON value from a file, for messages."""
    if isinstance(value, list):
        return f"a {len(value)}-item list"
    if isinstance(value, dict):
        return "an object"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(keys):
    shown = ", ".join(_show(k) for k in sorted(keys)[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def check_file(path):
    """The RBQEConfig of the model file ``path`` (a str); WeightsError for anything a
    trained RBQE model file would not hold."""
    if not path.endswith(".keras"):
        raise WeightsError(f"{path}: expected a .keras model file (as written by rbqe_tf.train)")
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: no such file")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise WeightsError(f"{path}: {size} bytes; an RBQE model file is at most {MAX_FILE_BYTES}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError):
        raise WeightsError(f"{path}: not a .keras archive (truncated or corrupt file)") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    with archive:
        _check_members(path, archive.infolist())
        try:
            saved = json.loads(_read(path, archive, CONFIG))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise WeightsError(f"{path}: {CONFIG} is not valid JSON") from None
        cfg = _checked_config(path, saved)
        _check_weights(path, _read(path, archive, WEIGHTS))
    return cfg


def _check_members(path, members):
    """Declared sizes from the zip directory, before any member is read."""
    for member in members:
        limit = MEMBERS.get(member.filename)
        if limit is None:
            raise WeightsError(f"{path}: unexpected member {_show(member.filename)} "
                               f"(an RBQE model file holds {', '.join(MEMBERS)})")
        if member.file_size > limit:
            raise WeightsError(f"{path}: member {member.filename} declares {member.file_size} "
                               f"bytes (at most {limit})")
    names = {member.filename for member in members}
    for name in (CONFIG, WEIGHTS):
        if name not in names:
            raise WeightsError(f"{path}: not a Keras model archive (no {name})")


def _read(path, archive, name):
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
        reason = str(e) or type(e).__name__
        raise WeightsError(f"{path}: corrupt file ({name}: {reason})") from None


def _checked_config(path, saved):
    """``config.json`` → RBQEConfig, if it describes this project's RBQE with sane values."""
    if not isinstance(saved, dict):
        raise WeightsError(f"{path}: not an RBQE model ({CONFIG} holds {_show(saved)})")
    for key, expected in _IDENTITY.items():
        if saved.get(key) != expected:
            raise WeightsError(f"{path}: not an RBQE model ({key} = {_show(saved.get(key))})")
    unknown = set(saved) - set(_IDENTITY) - {"config", *_IGNORED}
    if unknown:
        raise WeightsError(f"{path}: unknown entries in {CONFIG}: {_names(unknown)}")
    for key in _IGNORED:
        if not isinstance(saved.get(key), (dict, type(None))):
            raise WeightsError(f"{path}: {key} = {_show(saved[key])} (expected an object)")
    config = saved.get("config")
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: config = {_show(config)} (expected an object)")
    fmt = config.get("format", 0)
    if type(fmt) is int and fmt > FILE_FORMAT:
        raise WeightsError(f"{path}: written by a newer rbqe_tf (file format {fmt}; "
                           f"this version reads {FILE_FORMAT})")
    unknown = set(config) - set(_SETTINGS)
    if unknown:
        raise WeightsError(f"{path}: unknown model settings {_names(unknown)} "
                           "(a file from another rbqe_tf version)")
    for key, value in config.items():
        accepts, expected = _SETTINGS[key]
        if not accepts(value):
            raise WeightsError(f"{path}: model setting {key} = {_show(value)} "
                               f"(expected {expected})")
    return RBQEConfig(**{f.name: config[f.name] for f in dataclasses.fields(RBQEConfig)
                         if f.name in config})


def _check_weights(path, data):
    """The HDF5 datasets' declared sizes: a small compressed or unwritten dataset can
    stand for gigabytes that Keras would allocate before it compares shapes."""
    sizes = []
    try:
        with h5py.File(io.BytesIO(data), "r") as weights:
            weights.visititems(lambda _, item: sizes.append(
                item.nbytes if isinstance(item, h5py.Dataset) else 0))
    except Exception:  # h5py raises many types for damaged files
        raise WeightsError(f"{path}: {WEIGHTS} is not a readable HDF5 file") from None
    if sum(sizes) > MAX_WEIGHTS_BYTES:
        raise WeightsError(f"{path}: {WEIGHTS} declares {sum(sizes)} bytes of weights "
                           f"(at most {MAX_WEIGHTS_BYTES})")
