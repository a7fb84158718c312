"""Trustworthy Keras model files: ``rbqe_tf.model.load_model`` (safe mode) turns every
damaged, foreign or mismatched ``.keras`` file into a one-line WeightsError naming it."""
import json
import zipfile

import keras
import pytest
import tensorflow as tf

from rbqe_tf.config import get_config
from rbqe_tf.model import WeightsError, build_model, load_model
from rbqe_tf.train_config import ConfigError, TrainConfig
from rbqe_tf.trainer import build

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


def _rewrite(src, dst, edit):
    """Copies the .keras (zip) ``src`` to ``dst`` with ``edit(member name, bytes)`` applied
    to each member (None drops it); the zip's own checksums are recomputed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
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


def test_safe_mode_refuses_code_in_the_file(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(tmp_path / "lambda.keras")
    _one_line_error(tmp_path / "lambda.keras", "safe_mode")


def test_another_keras_model_is_refused(tmp_path):
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(tmp_path / "dense.keras")
    _one_line_error(tmp_path / "dense.keras", r"not an RBQE model \(Sequential\)")


def test_weights_of_a_smaller_architecture_are_refused(saved, tmp_path):
    _one_line_error(_mixed(saved, "tiny.keras", "tiny3.keras", tmp_path / "m.keras"),
                    "cannot load model")


def test_training_init_from_another_architecture_is_a_config_error(saved, tmp_path):
    cfg = TrainConfig(data=[], run_dir=str(tmp_path), variant="tiny",
                      init=str(saved / "tiny3.keras"))
    with pytest.raises(ConfigError, match="tiny3.keras: architecture differs from --variant tiny"):
        build(cfg, tf.distribute.get_strategy())





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
