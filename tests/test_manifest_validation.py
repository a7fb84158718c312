"""A hostile or damaged manifest.json: every field a runner reads is checked on read, each
problem is one line naming the manifest and the field, and no file outside the export
folder is ever opened or hashed. Fast: manifests are written here, no TensorFlow."""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import edit_one_field

from export import run
from rbqe_tf import gain, levels
from rbqe_tf.image_io import write_image
from rbqe_tf.litert import manifest as manifest_module
from rbqe_tf.litert.manifest import (ManifestError, checked_entry, read_manifest, sha256_file,
                                     write_manifest)
from rbqe_tf.litert.runner import Runner

TILE = 64


def _tensor(name, shape, index):
    return {"name": name, "tensor": f"serving_default_{name}:0", "index": index,
            "shape": list(shape), "dtype": "float32", "quantization": None}


def _files(folder):
    """Model entries shaped like the exporter's (tile 64, five exits, both codecs); the
    files hold placeholder bytes, as nothing here runs them."""
    y = [1, TILE, TILE, 1]
    files = {}
    for k in range(1, 6):
        files[f"exit_{k}"] = ([_tensor("y", y, 0)], [_tensor("exit", y, 1)])
        feature = [_tensor(f"x_{k - 1}_0", [1, TILE >> k, TILE >> k, 4], 1)]
        files[f"stage_{k}"] = ([_tensor("y", y, 0)] + ([] if k == 1 else
                                                       [dict(feature[0], index=2)]),
                               [_tensor("exit", y, 3), _tensor(f"x_{k}_0",
                                                               [1, TILE >> k, TILE >> k, 4], 4)])
    for codec, block in levels.BLOCK_SIZE.items():
        side = TILE // block - 1
        files[f"score_{codec}"] = ([_tensor("exit", y, 0)],
                                   [_tensor("patches", [1, side, side, 3], 1)])
    entries = {}
    for name, (inputs, outputs) in files.items():
        path = os.path.join(folder, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(name.encode())
        entries[name] = {"path": f"{name}.tflite", "sha256": sha256_file(path), "bytes": 7,
                         "quantize": "fp32", "inputs": inputs, "outputs": outputs}
    return entries


def _predictor(path, exits=5):
    n = gain.NUM_FEATURES
    gain.GainPredictor({"mean": np.zeros(n), "scale": np.ones(n), "w0": np.zeros((n, 2)),
                        "b0": np.zeros(2), "w1": np.zeros((2, exits)),
                        "b1": np.zeros(exits)}).save(path)


@pytest.fixture
def export(tmp_path):
    """(folder, manifest): a valid export folder and its manifest dict (as written)."""
    folder = tmp_path / "models"
    folder.mkdir()
    _predictor(folder / "gain_jpeg.npz")
    manifest = {
        "quantize": "fp32", "tile": TILE, "size_multiple": 32, "num_exits": 5,
        "codecs": ["jpeg", "hevc"], "thresholds": {"jpeg": 0.79, "hevc": 0.89},
        "threshold_sources": {"jpeg": "default", "hevc": "default"},
        "gain": {"jpeg": {"path": "gain_jpeg.npz",
                          "sha256": sha256_file(folder / "gain_jpeg.npz"),
                          "margin": 0.42, "tolerance": 0.0}},
        "block_size": dict(levels.BLOCK_SIZE),
        "model": {"config": {"features": 4}, "weights": None},
        "macs": {"per_exit": [10, 20, 30, 40, 50], "per_stage": [10, 10, 10, 10, 10]},
        "files": _files(str(folder))}
    write_manifest(str(folder), manifest)
    return str(folder), manifest


def _rewrite(folder, manifest, edit):
    edit(manifest)
    write_manifest(folder, manifest)


def _refused(folder):
    """read_manifest's one-line message, without the manifest's path it starts with."""
    with pytest.raises(ManifestError) as caught:
        read_manifest(folder)
    message = str(caught.value)
    assert "\n" not in message
    prefix = os.path.join(folder, "manifest.json") + ": "
    assert message.startswith(prefix), message
    return message[len(prefix):]


def test_block_sizes_agree_with_levels():
    assert manifest_module.BLOCK_SIZE == levels.BLOCK_SIZE
    assert tuple(manifest_module.BLOCK_SIZE) == levels.CODECS


def test_a_valid_manifest_reads_back_unchanged(export):
    folder, manifest = export
    assert read_manifest(folder) == {"format": "rbqe-tflite", "format_version": 1, **manifest}
    _rewrite(folder, manifest, lambda m: m.pop("gain"))  # exports from before the gain rule
    read_manifest(folder)


def _set(path, value):
    """An edit setting the field at ``path`` (keys) to ``value``; ``...`` deletes it."""
    def edit(m):
        for key in path[:-1]:
            m = m[key]
        if value is ...:
            del m[path[-1]]
        else:
            m[path[-1]] = value
    return edit


@pytest.mark.parametrize("path,value,message", [
    (["codecs"], "jpeg", 'codecs: expected a list, got "jpeg"'),
    (["codecs"], [], "codecs: expected at least one codec, got []"),
    (["codecs"], ["jpeg", "png"], 'codecs[1]: expected "jpeg" or "hevc", got "png"'),
    (["codecs"], ["jpeg", "jpeg"], 'codecs: expected distinct codecs, got ["jpeg", "jpeg"]'),
    (["tile"], "64", 'tile: expected an integer, got "64"'),
    (["tile"], 1e9, "tile: expected an integer, got 1000000000.0"),
    (["tile"], True, "tile: expected an integer, got true"),
    (["tile"], 10 ** 9, "tile: expected an integer in 32..4096, got 1000000000"),
    (["tile"], 80, "tile: expected a multiple of size_multiple 32, got 80"),
    (["tile"], ..., "tile: missing"),
    (["num_exits"], 0, "num_exits: expected an integer in 1..8, got 0"),
    (["size_multiple"], 16, "size_multiple: expected 32, got 16"),
    (["quantize"], "int4", 'quantize: expected "fp32" or "fp16" or "int8_full_int8_io" or '
                           '"int8_full_fp32_io", got "int4"'),
    (["block_size", "jpeg"], 0, "block_size.jpeg: expected 8, got 0"),
    (["block_size"], 8, "block_size: expected an object, got 8"),
    (["thresholds", "jpeg"], math.nan, "thresholds.jpeg: expected a finite number, got NaN"),
    (["thresholds", "hevc"], math.inf,
     "thresholds.hevc: expected a finite number, got Infinity"),
    (["thresholds", "jpeg"], 1.5, "thresholds.jpeg: expected a finite number in 0..1, got 1.5"),
    (["thresholds", "hevc"], ..., "thresholds.hevc: missing"),
    (["macs", "per_exit"], [1, 2], "macs.per_exit: expected 5 counts (num_exits), got 2"),
    (["files", "stage_2", "inputs"], ..., "files.stage_2.inputs: missing"),
    (["files", "stage_2", "path"], 3, "files.stage_2.path: expected a string, got 3"),
    (["files", "stage_2", "path"], "stage\n2",
     'files.stage_2.path: expected no control characters, got "stage\\n2"'),
    (["files", "stage_2", "sha256"], "abc",
     'files.stage_2.sha256: expected 64 lowercase hex digits, got "abc"'),
    (["files", "exit_1", "outputs", 0, "dtype"], "object",
     'files.exit_1.outputs[0].dtype: expected "float32" or "float16" or "int8" or "uint8" or '
     '"int16" or "int32", got "object"'),
    (["files", "exit_1", "outputs", 0, "shape", 1], -64,
     "files.exit_1.outputs[0].shape[1]: expected an integer in 1..65536, got -64"),
    (["files", "exit_1", "outputs", 0, "quantization"], {"scale": 0.0, "zero_point": 0},
     "files.exit_1.outputs[0].quantization.scale: expected a positive number, got 0.0"),
    (["files", "exit_1", "inputs", 0, "shape"], [1, 128, 128, 1],
     "files.exit_1.inputs[0].shape: expected [1, 64, 64, 1] (the tile), got [1, 128, 128, 1]"),
    (["files", "stage_3", "inputs", 1, "name"], "x_9_0",
     'files.stage_3.inputs: "x_9_0" is not an output of an earlier stage'),
    (["files", "stage_4", "outputs", 0, "name"], "out", 'files.stage_4.outputs: no "exit"'),
    (["files", "score_hevc", "outputs", 0, "shape"], [1, 7, 7, 3],
     'files.score_hevc: expected input "exit" and output "patches" [1, 15, 15, 3]'),
    (["files", "odd\nname"], "x", 'files["odd\\nname"]: expected an object, got "x"'),
    (["gain"], "jpeg", 'gain: expected an object, got "jpeg"'),
    (["gain", "jpeg", "margin"], math.nan, "gain.jpeg.margin: expected a finite number, got NaN"),
    (["gain", "jpeg", "tolerance"], -1, "gain.jpeg.tolerance: expected a finite number ≥ 0, "
                                        "got -1"),
    (["gain", "png"], {}, "gain.png: not one of the export's codecs (jpeg, hevc)"),
])
def test_a_bad_field_is_one_line_naming_it(export, path, value, message):
    folder, manifest = export
    _rewrite(folder, manifest, _set(path, value))
    assert _refused(folder) == message


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "not an RBQE TFLite manifest"),
    ("[" * 100_000, "unreadable (maximum recursion depth exceeded"),
    ('{"format": "rbqe-tflite", "format_version": "1"}',
     'format version "1" is not supported'),
], ids=["list", "deep", "version"])
def test_a_foreign_or_broken_file_is_one_line(export, text, message):
    folder, _ = export
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        f.write(text)
    assert _refused(folder).startswith(message)


@pytest.fixture
def secret(tmp_path):
    """A readable file outside the export folder: its hash must never be reported."""
    path = tmp_path / "secret.tflite"
    path.write_bytes(b"private")
    return str(path)


@pytest.fixture
def hashed(monkeypatch):
    """Every path given to sha256_file."""
    paths = []
    real = manifest_module.sha256_file
    monkeypatch.setattr(manifest_module, "sha256_file",
                        lambda path: paths.append(os.path.realpath(path)) or real(path))
    return paths


@pytest.mark.parametrize("entry", [["files", "stage_1"], ["gain", "jpeg"]])
@pytest.mark.parametrize("how", ["parent", "far", "absolute", "symlink"])
def test_a_path_outside_the_folder_is_refused_unhashed(export, secret, hashed, entry, how):
    folder, manifest = export
    relative = {"parent": "../secret.tflite", "far": "../" * 40 + secret.lstrip("/"),
                "absolute": secret, "symlink": "link.tflite"}[how]
    os.symlink(secret, os.path.join(folder, "link.tflite"))
    _rewrite(folder, manifest, _set(entry + ["path"], relative))
    message = _refused(folder)
    assert message.startswith(f'{".".join(entry)}.path: "'), message
    assert message.endswith(" is not inside the export folder"), message
    with pytest.raises(ManifestError, match="is not inside the export folder") as by_runner:
        Runner(folder)
    with pytest.raises(ManifestError, match=r"^\S*link.tflite: not inside the export folder") \
            as by_entry:  # an entry that did not come through read_manifest
        checked_entry(folder, {"path": "link.tflite", "sha256": "0" * 64})
    assert secret not in hashed
    leaked = sha256_file(secret)[:12]
    assert all(leaked not in text for text in (message, str(by_runner.value), str(by_entry.value)))


def test_a_path_inside_the_folder_may_name_a_subfolder(export):
    folder, manifest = export
    os.mkdir(os.path.join(folder, "sub"))
    os.rename(os.path.join(folder, "stage_1.tflite"), os.path.join(folder, "sub", "s.tflite"))
    _rewrite(folder, manifest, _set(["files", "stage_1", "path"], "sub/../sub/s.tflite"))
    assert checked_entry(folder, read_manifest(folder)["files"]["stage_1"]).endswith("s.tflite")


def test_a_gain_predictor_for_other_exits_is_refused(export):
    folder, manifest = export
    _predictor(os.path.join(folder, "gain_jpeg.npz"), exits=4)
    _rewrite(folder, manifest, _set(["gain", "jpeg", "sha256"],
                                    sha256_file(os.path.join(folder, "gain_jpeg.npz"))))
    with pytest.raises(ManifestError, match="gain_jpeg.npz predicts 4 exits, the export has 5"):
        Runner(folder)


def test_the_cli_prints_one_error_line(export, tmp_path, capsys):
    folder, manifest = export
    _rewrite(folder, manifest, _set(["tile"], "64"))
    image = tmp_path / "a.png"
    write_image(image, np.zeros((16, 16), np.uint8))
    assert run.main([str(image), "--models", folder, "--out", str(tmp_path / "out")]) == 2
    expected = f'{os.path.join(folder, "manifest.json")}: tile: expected an integer, got "64"'
    assert capsys.readouterr().err == f"error: {expected}\n"


@settings(deadline=2000, derandomize=True, max_examples=300,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_manifest_reads_or_fails_in_one_line(export, data):
    """Any one field replaced by any JSON value (NaN and ±inf included) or removed: the
    manifest reads, or one ManifestError line names it; never another exception."""
    folder, valid = export
    manifest = edit_one_field(json.loads(json.dumps(valid)), data.draw)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"format": manifest_module.FORMAT,
                   "format_version": manifest_module.FORMAT_VERSION, **manifest}, f)
    try:
        read = read_manifest(folder)
    except ManifestError as e:
        assert "\n" not in str(e) and str(e).startswith(os.path.join(folder, "manifest.json"))
    else:
        assert isinstance(read["tile"], int) and read["codecs"]
