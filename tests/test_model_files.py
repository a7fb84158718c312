"""Trustworthy Keras model files: ``rbqe_tf.model.load_model`` turns every damaged,
foreign, mismatched or hostile ``.keras`` file into a one-line WeightsError naming it;
hostile ones (``rbqe_tf.model_file``) before Keras reads any of the file."""
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import h5py
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import edit_one_field
from rbqe_tf import model_file
from rbqe_tf.config import RBQEConfig, get_config
from rbqe_tf.model import WeightsError, build_model, load_model
from rbqe_tf.train_config import ConfigError, TrainConfig
from rbqe_tf.training import initial_model

WEIGHTS = "model.weights.h5"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny model files: the variant, and two other architectures (3 levels; no ECA)."""
    folder = tmp_path_factory.mktemp("models")
    build_model("tiny").save(folder / "tiny.keras")
    build_model("tiny", num_levels=3).save(folder / "tiny3.keras")
    build_model("tiny", eca=False).save(folder / "tiny_no_eca.keras")
    return folder


def _mixed(saved, config_file, weights_file, dst):
    """``config_file``'s model with ``weights_file``'s weights (as a version change that
    reorders or adds layers would give)."""
    with zipfile.ZipFile(saved / weights_file) as other:
        weights = other.read(WEIGHTS)
    return _rewrite(saved / config_file, dst, lambda n, b: weights if n == WEIGHTS else b)


def _rewrite(src, dst, edit, compression=zipfile.ZIP_STORED):
    """Copies the .keras (zip) ``src`` to ``dst`` with ``edit(member name, bytes)`` applied
    to each member (None drops it); the zip's own checksums are recomputed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
    return dst


def _edit_config(change):
    def edit(name, data):
        if name != "config.json":
            return data
        config = json.loads(data)
        change(config)
        return json.dumps(config)
    return edit


def _truncated(fraction):
    def make(src, dst):
        raw = src.read_bytes()
        dst.write_bytes(raw[:int(len(raw) * fraction)])
        return dst
    return make


def _bit_flipped(src, dst):
    raw = bytearray(src.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    dst.write_bytes(bytes(raw))
    return dst


DAMAGED = {
    "truncated to 10%": _truncated(0.1),
    "truncated to 60%": _truncated(0.6),
    "last byte missing": _truncated(0.99999),
    "one bit flipped": _bit_flipped,
    "weights missing": lambda s, d: _rewrite(s, d, lambda n, b: None if n == WEIGHTS else b),
    "weights truncated": lambda s, d: _rewrite(
        s, d, lambda n, b: b[:len(b) // 2] if n == WEIGHTS else b),
    "config not JSON": lambda s, d: _rewrite(
        s, d, lambda n, b: b"{oops" if n == "config.json" else b),
}


def _one_line_error(path, match=None, **kwargs):
    with pytest.raises(WeightsError, match=match) as error:
        load_model(path, **kwargs)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("damage", DAMAGED)
def test_damaged_file_is_a_one_line_error_never_a_model(saved, tmp_path, damage):
    _one_line_error(DAMAGED[damage](saved / "tiny.keras", tmp_path / "damaged.keras"))


def test_weights_of_a_smaller_architecture_are_refused(saved, tmp_path):
    _one_line_error(_mixed(saved, "tiny.keras", "tiny3.keras", tmp_path / "m.keras"),
                    "cannot load model")


def test_training_init_from_another_architecture_is_a_config_error(saved, tmp_path):
    cfg = TrainConfig(data=[], run_dir=str(tmp_path), variant="tiny",
                      init=str(saved / "tiny3.keras"))
    with pytest.raises(ConfigError, match="tiny3.keras: architecture differs from --variant tiny"):
        initial_model(cfg)


def test_truncated_file_says_so(saved, tmp_path):
    _one_line_error(_truncated(0.6)(saved / "tiny.keras", tmp_path / "t.keras"),
                    "truncated or corrupt")


def test_mismatched_weights_say_so(saved, tmp_path):
    _one_line_error(_mixed(saved, "tiny.keras", "tiny3.keras", tmp_path / "m.keras"),
                    "weights do not match its architecture")


def test_weights_of_a_larger_architecture_are_refused(saved, tmp_path):
    _one_line_error(_mixed(saved, "tiny_no_eca.keras", "tiny.keras", tmp_path / "m.keras"),
                    "weights do not match its architecture")


def test_file_from_a_newer_version_is_refused(saved, tmp_path):
    newer = _rewrite(saved / "tiny.keras", tmp_path / "newer.keras",
                     _edit_config(lambda c: c["config"].update(attention_heads=4)))
    _one_line_error(newer, "attention_heads")


def test_caller_can_require_an_architecture(saved):
    message = _one_line_error(saved / "tiny.keras", match="architecture",
                              expect=get_config("rbqe"))
    assert "features 4" in message and "features 32" in message


def test_models_saved_here_load(saved):
    for name, cfg in [("tiny.keras", get_config("tiny")),
                      ("tiny3.keras", get_config("tiny", num_levels=3)),
                      ("tiny_no_eca.keras", get_config("tiny", eca=False))]:
        assert load_model(saved / name).rbqe_config == cfg


def test_largest_admitted_architecture_fits_the_weights_limit():
    """MAX_WEIGHTS_BYTES stays above what the ranges admit (float32, h5 overhead < 2×)."""
    largest = {name: high for name, (_, high) in model_file.RANGES.items()}
    model = build_model("tiny", **largest, eca_last_step=True)
    assert 2 * 4 * model.count_params() <= model_file.MAX_WEIGHTS_BYTES


@pytest.fixture
def refused_unread(monkeypatch):
    """``(path, match)`` → the one-line error, failing the test if Keras deserializes
    or any zip member is read first."""
    def reached(*args, **kwargs):
        pytest.fail("the file was read before it was refused")

    def refuse(path, match):
        monkeypatch.setattr(keras.saving, "load_model", reached)
        monkeypatch.setattr(zipfile.ZipFile, "open", reached)
        return _one_line_error(path, match)
    return refuse


@pytest.fixture
def unloaded(monkeypatch):
    """Fails the test if Keras deserializes (members may be read: config.json is checked)."""
    def reached(*args, **kwargs):
        pytest.fail("Keras deserialized the file before it was refused")
    monkeypatch.setattr(keras.saving, "load_model", reached)


def _config_edited(saved, tmp_path, change):
    return _rewrite(saved / "tiny.keras", tmp_path / "edited.keras", _edit_config(change))


def _set(key, value, inner=True):
    return lambda c: (c["config"] if inner else c).__setitem__(key, value)


HOSTILE_CONFIGS = {  # change to config.json → what the message must say
    "format a string": (_set("format", "x"), 'model setting format = "x" \\(expected an integer'),
    "format negative": (_set("format", -1), "model setting format = -1"),
    "config a list": (_set("config", [1, 2], inner=False), "config = a 2-item list \\(expected"),
    "config missing": (lambda c: c.pop("config"), "config = null"),
    "num_levels 40": (_set("num_levels", 40), r"num_levels = 40 \(expected an integer in 2..8\)"),
    "num_levels a bool": (_set("num_levels", True), "num_levels = true"),
    "features huge": (_set("features", 10 ** 6), "features = 1000000"),
    "features a string": (_set("features", "4"), 'features = "4"'),
    "features a float": (_set("features", 4.0), "features = 4.0"),
    "channels 0": (_set("channels", 0), "channels = 0"),
    "eca a number": (_set("eca", 1), r"eca = 1 \(expected true or false\)"),
    "input_size huge": (_set("input_size", [10 ** 9, None]), "input_size = a 2-item list"),
    "input_size a string": (_set("input_size", "big"), 'input_size = "big"'),
    "name a number": (_set("name", 7), "name = 7"),
    "name too long": (_set("name", "n" * 100000), 'name = "nnnn'),
    "name with a newline": (_set("name", "a\nb"), r'name = "a\\nb"'),
    "digest not hex": (_set("weights_digest", "zz"), 'weights_digest = "zz"'),
    "another class": (_set("class_name", "Sequential", inner=False),
                      'not an RBQE model \\(class_name = "Sequential"\\)'),
    "another module": (_set("module", "keras.config", inner=False), 'module = "keras.config"'),
    "another registration": (_set("registered_name", "keras>Functional", inner=False),
                             'registered_name = "keras>Functional"'),
    "class_name a list": (_set("class_name", ["RBQE"], inner=False), "class_name = a 1-item list"),
    "build_config a string": (_set("build_config", "x", inner=False),
                              'build_config = "x" \\(expected an object\\)'),
    "compile_config a list": (_set("compile_config", [], inner=False),
                              "compile_config = a 0-item list"),
    "unknown top-level entry": (_set("shared_object_id", 1, inner=False),
                                'unknown entries in config.json: "shared_object_id"'),
}


@pytest.mark.parametrize("case", HOSTILE_CONFIGS)
def test_hostile_config_is_refused_before_keras(saved, tmp_path, unloaded, case):
    change, match = HOSTILE_CONFIGS[case]
    message = _one_line_error(_config_edited(saved, tmp_path, change), match)
    assert len(message) < 300, message


@pytest.mark.parametrize("text", [b"[" * 100000, b"\xff\xfe{}", b"[1]", b'"RBQE"'],
                         ids=["deeply nested", "not UTF-8", "a list", "a string"])
def test_config_that_is_no_model_description_is_refused(saved, tmp_path, unloaded, text):
    path = _rewrite(saved / "tiny.keras", tmp_path / "c.keras",
                    lambda n, b: text if n == "config.json" else b)
    _one_line_error(path, "config.json (is not valid JSON|holds)")


def test_another_keras_model_is_refused_before_keras_builds_it(tmp_path, unloaded):
    """Keras would build it, running what its config names (a hostile one called
    set_floatx), before its class could be checked."""
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)]).save(
        tmp_path / "lambda.keras")
    _one_line_error(tmp_path / "lambda.keras", 'not an RBQE model \\(class_name = "Sequential"\\)')


def test_oversized_config_is_refused_from_the_zip_directory(saved, tmp_path, refused_unread):
    """Whitespace compresses ~1000:1, so a small file can hold a huge config.json."""
    pad = b" " * model_file.MAX_CONFIG_BYTES
    with zipfile.ZipFile(saved / "tiny.keras") as original:
        config = original.read("config.json")
    path = _rewrite(saved / "tiny.keras", tmp_path / "padded.keras",
                    lambda n, b: pad + config if n == "config.json" else b, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < model_file.MAX_CONFIG_BYTES / 10
    refused_unread(path, f"member config.json declares {len(pad + config)} bytes "
                          f"\\(at most {model_file.MAX_CONFIG_BYTES}\\)")


def _declare_size(path, member, size):
    """Sets ``member``'s uncompressed size in the zip directory to ``size``: what a
    decompression bomb declares, without its gigabytes."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        length = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + length] == member.encode():
            raw[at + 24:at + 28] = size.to_bytes(4, "little")
        at = raw.find(b"PK\x01\x02", at + 1)
    path.write_bytes(bytes(raw))


def test_member_bomb_is_refused_before_any_member_is_read(saved, tmp_path, refused_unread):
    path = _rewrite(saved / "tiny.keras", tmp_path / "bomb.keras", lambda n, b: b)
    _declare_size(path, "model.weights.h5", 0xFFFFFFFE)
    refused_unread(path, f"member model.weights.h5 declares {0xFFFFFFFE} bytes")


def test_unexpected_member_is_refused_before_any_member_is_read(saved, tmp_path, refused_unread):
    path = _rewrite(saved / "tiny.keras", tmp_path / "extra.keras", lambda n, b: b)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("assets/payload.bin", b"x")
    refused_unread(path, 'unexpected member "assets/payload.bin"')


def test_oversized_file_is_refused_before_it_is_opened(saved, tmp_path, refused_unread):
    path = tmp_path / "big.keras"
    path.write_bytes((saved / "tiny.keras").read_bytes())
    os.truncate(path, model_file.MAX_FILE_BYTES + 1)  # sparse: no disk used
    refused_unread(path, f"at most {model_file.MAX_FILE_BYTES}")


def test_weights_dataset_bomb_is_refused_before_keras(saved, tmp_path, unloaded):
    """An HDF5 dataset with unwritten chunks declares its size but stores nothing."""
    def add_huge_dataset(name, data):
        if name != "model.weights.h5":
            return data
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as weights:
            weights.create_dataset("huge", shape=(model_file.MAX_WEIGHTS_BYTES // 4 + 1,),
                                   dtype="f4", chunks=(1 << 16,), compression="gzip")
        return buffer.getvalue()
    path = _rewrite(saved / "tiny.keras", tmp_path / "h5bomb.keras", add_huge_dataset)
    assert path.stat().st_size < 2 * (saved / "tiny.keras").stat().st_size
    _one_line_error(path, r"model.weights.h5 declares \d+ bytes of weights "
                          f"\\(at most {model_file.MAX_WEIGHTS_BYTES}\\)")


def test_architecture_is_compared_before_keras(saved, unloaded):
    _one_line_error(saved / "tiny.keras", "architecture differs", expect=RBQEConfig())


def _cli(*args):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.mark.slow
def test_clis_say_one_error_line_for_a_hostile_model(saved, tmp_path):
    bad = _config_edited(saved, tmp_path, _set("format", "x"))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "gray.png"), np.full((64, 64), 128, np.uint8))
    for args in [("rbqe_tf.enhance", images, "--out", tmp_path / "out", "--weights", bad),
                 ("rbqe_tf.evaluate", "--data", images, "--codec", "jpeg", "--weights", bad)]:
        proc = _cli(*args)
        assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
            f'error: {bad}: model setting format = "x" (expected an integer in 0..1)'], proc.stderr


@settings(deadline=3000, derandomize=True, max_examples=150,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_config_is_vetted_or_refused_in_one_line(saved, tmp_path, data):
    """Any one entry of config.json replaced by any JSON value or removed: the file's
    checks pass with a config inside the admitted ranges, or refuse it in one line."""
    with zipfile.ZipFile(saved / "tiny.keras") as z:
        config = edit_one_field(json.loads(z.read("config.json")), data.draw)
    target = _rewrite(saved / "tiny.keras", tmp_path / "fuzzed.keras",
                      lambda n, b: json.dumps(config).encode() if n == "config.json" else b)
    try:
        vetted = model_file.check_file(str(target))
    except WeightsError as e:
        assert str(e).startswith(f"{target}: ") and "\n" not in str(e)
    else:
        for field, (low, high) in model_file.RANGES.items():
            assert low <= getattr(vetted, field) <= high
