"""TFLite export of the tiny variant at a 64×64 tile in every quantization mode:
manifest, parity checks, int8 stage I/O, GPU allow-list, score models, CLI plumbing."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from export.tflite import bare_quantize
from rbqe_tf import iqa
from rbqe_tf.conversion import verify
from rbqe_tf.conversion.exporter import Exporter, ExportError, exit_thresholds
from rbqe_tf.litert.flatbuffer import GPU_OPS, gpu_problems, op_counts
from rbqe_tf.litert.interpreter import Value, make_interpreter, to_input
from rbqe_tf.litert.manifest import QUANT_MODES, read_manifest, sha256_file
from rbqe_tf.score_pooling import patch_sums, score_from_sums

TILE = 64  # the tile of conftest's export_tiny


@pytest.mark.parametrize("mode", QUANT_MODES)
def test_export_writes_checked_files_and_manifest(mode, export_tiny):
    folder = export_tiny(mode)
    manifest = read_manifest(folder)
    names = {f"exit_{k}" for k in range(1, 6)} | {f"stage_{k}" for k in range(1, 6)}
    assert set(manifest["files"]) == names | {"score_jpeg", "score_hevc"}
    assert manifest["quantize"] == mode and manifest["tile"] == TILE
    assert manifest["thresholds"] == iqa.DEFAULT_THRESHOLDS
    assert manifest["threshold_sources"] == {"jpeg": "default", "hevc": "default"}
    assert len(manifest["macs"]["per_exit"]) == 5 and len(manifest["macs"]["per_stage"]) == 5
    assert manifest["versions"]["tensorflow"] == tf.__version__
    assert manifest["versions"]["ai_edge_litert"]
    for name, entry in manifest["files"].items():
        path = os.path.join(folder, entry["path"])
        assert sha256_file(path) == entry["sha256"] and os.path.getsize(path) == entry["bytes"]
        if name.startswith("score_"):
            assert entry["quantize"] == "fp32"
            continue
        assert entry["gpu_compatible"] and set(entry["ops"]) <= GPU_OPS, entry["gpu_problems"]
        int8_io = mode == "int8_full_int8_io"
        for tensor in entry["inputs"] + entry["outputs"]:
            assert tensor["dtype"] == ("int8" if int8_io else "float32")
            assert (tensor["quantization"] is not None) == int8_io
        if mode.startswith("int8"):
            assert "QUANTIZE" in entry["ops"] or int8_io
    report = manifest["verification"]
    limit = verify.FLOAT_TOLERANCE.get(mode)
    for name, value in report["parity"].items():
        assert value <= limit if limit else value >= verify.MIN_INT8_PSNR, (name, value)
    assert max(report["score_max_abs_dq"].values()) <= verify.SCORE_TOLERANCE
    assert len(report["delta_psnr_lost"]) == len(report["delta_psnr_lost_monolithic"]) == 5
    if mode.startswith("int8"):  # the monolithic files lose about what the stages lose
        assert min(report["psnr_vs_float_monolithic"]) >= verify.MIN_INT8_PSNR


def test_manifest_io_order_and_names_come_from_the_interpreter(export_tiny):
    folder = export_tiny("int8_full_int8_io")
    entry = read_manifest(folder)["files"]["stage_3"]
    interpreter = make_interpreter(os.path.join(folder, entry["path"]), 1)
    signature = interpreter.get_signature_runner()
    for details, sig, listed in ((interpreter.get_input_details(), signature.get_input_details(),
                                  entry["inputs"]),
                                 (interpreter.get_output_details(),
                                  signature.get_output_details(), entry["outputs"])):
        assert [d["name"] for d in details] == [t["tensor"] for t in listed]
        assert {t["name"]: t["index"] for t in listed} == {n: d["index"] for n, d in sig.items()}
    assert {t["name"] for t in entry["inputs"]} == {"y", "x_0_0", "x_1_0", "x_0_1", "x_2_0",
                                                    "x_1_1", "x_0_2"}
    assert {t["name"] for t in entry["outputs"]} == {"exit", "x_3_0", "x_2_1", "x_1_2", "x_0_3"}


def test_int8_stage_files_agree_on_feature_quantization(export_tiny):
    """Each feature's scale/zero point as stage k writes it equals what later stages read
    (same calibration data): the runner passes int8 features on without requantizing."""
    files = read_manifest(export_tiny("int8_full_int8_io"))["files"]
    written = {t["name"]: t["quantization"] for k in range(1, 6)
               for t in files[f"stage_{k}"]["outputs"] if t["name"] != "exit"}
    for k in range(2, 6):
        for t in files[f"stage_{k}"]["inputs"]:
            q = t["quantization"]
            expected = written.get(t["name"], {"scale": 1 / 255, "zero_point": -128})
            assert q["zero_point"] == expected["zero_point"]
            assert q["scale"] == pytest.approx(expected["scale"], rel=1e-5)


def test_int8_input_holds_every_8_bit_level(export_tiny):
    files = read_manifest(export_tiny("int8_full_int8_io"))["files"]
    q = next(t for t in files["stage_1"]["inputs"] if t["name"] == "y")["quantization"]
    levels = np.arange(256, dtype=np.float32) / 255
    data = to_input(Value(levels), np.int8, (q["scale"], q["zero_point"]))
    np.testing.assert_allclose(Value(data, (q["scale"], q["zero_point"])).float(), levels,
                               atol=1e-6)


def test_to_input_requantizes_dequantizes_and_passes_through():
    data = np.array([-128, -100, 0, 127], np.int8)
    value = Value(data, (0.5, -128))
    assert to_input(value, np.int8, (0.5, -128)) is data
    assert to_input(value, np.int8, (0.5 * (1 + 1e-7), -128)) is data  # calibration round-off
    np.testing.assert_array_equal(to_input(value, np.int8, (1.0, -128)), [-128, -114, -64, 0])
    np.testing.assert_array_equal(to_input(value, np.float32, None), [0, 14, 64, 127.5])
    np.testing.assert_array_equal(to_input(Value(np.array([0.0, 300.0], np.float32)), np.int8,
                                           (1.0, 0)), [0, 127])


def _tflite(fn, *shapes):
    specs = [tf.TensorSpec(s, tf.float32) for s in shapes]
    concrete = tf.function(fn, input_signature=specs).get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module()).convert()


@pytest.mark.parametrize("fn,shapes,problem", [
    (lambda x: tf.squeeze(x, 0) * 2.0, [(1, 8, 8, 3)], "rank 3"),
    (lambda x: tf.expand_dims(tf.reduce_mean(x, (1, 2)), 1) + 1.0, [(1, 8, 8, 3)], "rank 2"),
    (lambda x: tf.gather(x, [2, 0], axis=3), [(1, 8, 8, 3)], "GATHER"),
    (lambda x: tf.reshape(x, (1, 192)) + 1.0, [(1, 8, 8, 3)], "rank 2"),
    (lambda x: tf.round(x), [(1, 8, 8, 3)], "ROUND"),
    (lambda x, y: x * y[:, :, :, ::-1], [(1, 8, 8, 3), (1, 8, 8, 3)], "strides"),
])
def test_gpu_allow_list_rejects(fn, shapes, problem):
    problems = gpu_problems(_tflite(fn, *shapes))
    assert any(problem in p for p in problems), problems


def test_gpu_allow_list_accepts_network_ops():
    kernel = np.ones((3, 3, 3, 4), np.float32)

    def fn(x):
        y = tf.nn.relu(tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), kernel, 2,
                                    "VALID"))  # the network's stride-2 "PyTorch padding"
        gate = tf.sigmoid(tf.reduce_mean(y, (1, 2), keepdims=True))
        return tf.concat([y * gate, y + 1.0], -1)[:, 1:5, :, :]

    data = _tflite(fn, (1, 10, 10, 3))
    assert gpu_problems(data) == []
    assert {"CONV_2D", "PAD", "MEAN", "LOGISTIC", "MUL", "ADD", "CONCATENATION"} <= set(
        op_counts(data))


@pytest.mark.parametrize("codec", ["jpeg", "hevc"])
def test_score_model_pools_to_quality_score_on_any_crop(codec, export_tiny):
    folder = export_tiny("fp32")
    entry = read_manifest(folder)["files"][f"score_{codec}"]
    interpreter = make_interpreter(os.path.join(folder, entry["path"]), 1)
    index = {t["name"]: t["index"] for t in entry["inputs"] + entry["outputs"]}
    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.normal(0, 0.01, (TILE, TILE)), 1) + 0.5
    blocky = np.kron(rng.random((TILE // 8, TILE // 8)), np.ones((8, 8)))
    for y in (rng.random((TILE, TILE)), smooth, blocky, np.zeros((TILE, TILE))):
        y = y.astype(np.float32)
        interpreter.set_tensor(index["exit"], y[None, :, :, None])
        interpreter.invoke()
        maps = interpreter.get_tensor(index["patches"])[0]
        b = 8 if codec == "jpeg" else 4
        for h, w in ((TILE, TILE), (61, 53), (20, 37), (7, 64)):
            q = score_from_sums(patch_sums(maps[:max(h // b - 1, 0), :max(w // b - 1, 0)]))
            expected = float(iqa.quality_score(y[None, :h, :w, None], codec)[0])
            assert q == pytest.approx(expected, abs=1e-5), (h, w)


def test_failed_check_raises_and_writes_no_manifest(tmp_path, monkeypatch, export_tiny):
    monkeypatch.setitem(verify.FLOAT_TOLERANCE, "fp32", 0.0)
    with pytest.raises(ExportError, match="max abs error"):
        export_tiny.exporter.export(str(tmp_path), "fp32", (export_tiny.images, 1),
                                    (export_tiny.images, 1), log=lambda line: None)
    assert not (tmp_path / "manifest.json").exists()
    assert (tmp_path / "stage_1.tflite").exists()


def test_manifest_is_plain_json(export_tiny):
    text = Path(export_tiny("fp16"), "manifest.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["format"] == "rbqe-tflite"


@pytest.mark.parametrize("flags,message", [
    ({}, "--out is required"),
    ({"codecs": ["jpeg", "av1"]}, "--codecs: expected some of jpeg, hevc, got jpeg,av1"),
    ({"calib": "/nonexistent"}, "--calib /nonexistent: no such folder"),
    ({"weights": "/nonexistent.keras"}, "/nonexistent.keras: no such file"),
    ({"out": "EXPORTED"}, "holds an earlier export (use --overwrite"),
])
def test_exporter_cli_refuses_bad_usage(tmp_path, capsys, flags, message, export_tiny):
    from absl import flags as absl_flags
    from absl.testing import flagsaver

    from export import tflite
    if not absl_flags.FLAGS.is_parsed():
        absl_flags.FLAGS.mark_as_parsed()
    values = {"weights": str(tmp_path / "w.keras"), "out": str(tmp_path / "out"), **flags}
    if values["out"] == "EXPORTED":
        values["out"] = export_tiny("fp32")
    if flags == {}:
        values = {}
    with flagsaver.flagsaver(**values):
        assert tflite.main(["prog"]) == 2
    assert message in capsys.readouterr().err


def test_bare_quantize_means_int8():
    assert bare_quantize(["p", "--quantize"]) == ["p", "--quantize=int8"]
    assert bare_quantize(["p", "--quantize", "--tile=64"]) == ["p", "--quantize=int8",
                                                                "--tile=64"]
    assert bare_quantize(["p", "--quantize", "fp16"]) == ["p", "--quantize", "fp16"]


def test_thresholds_calibrated_beside_the_weights_win(tmp_path):
    weights = tmp_path / "m.keras"
    assert exit_thresholds(("jpeg", "hevc"), weights) == {"jpeg": (0.79, "default"),
                                                          "hevc": (0.89, "default")}
    (tmp_path / "m.thresholds.json").write_text(json.dumps({"jpeg": {"threshold": 0.53}}))
    assert exit_thresholds(("jpeg", "hevc"), weights) == {"jpeg": (0.53, "calibrated"),
                                                          "hevc": (0.89, "default")}


def test_tile_must_be_a_multiple_of_32(tiny_model):
    with pytest.raises(ValueError, match="multiple of 32"):
        Exporter(tiny_model, 48)


def test_from_qat_flag_spelling():
    """``--from-qat`` (the documented spelling) reaches absl as ``--from_qat``."""
    assert bare_quantize(["p", "--quantize", "--from-qat", "runs/q"]) == [
        "p", "--quantize=int8", "--from_qat", "runs/q"]
    assert bare_quantize(["p", "--from-qat=runs/q"]) == ["p", "--from_qat=runs/q"]
    assert bare_quantize(["p", "--from-qatx"]) == ["p", "--from-qatx"]


def test_float_parity_tolerance_is_absolute_in_0_1_and_relative_above():
    checker = verify.Checker("fp32")
    exit_like = np.full((4, 4), 0.5, np.float32)
    checker.compare("exit", exit_like + 5e-5, exit_like)
    assert checker.failures == []
    checker.compare("exit", exit_like + 2e-4, exit_like)
    assert len(checker.failures) == 1 and "2.00e-04 > 1.00e-04" in checker.failures[0]
    feature = np.full((4, 4), 20.0, np.float32)
    checker.compare("x_1_0", feature + 1.5e-3, feature)  # 1e-4 × 20 = 2e-3 allowed
    checker.compare("x_1_0", feature + 3e-3, feature)
    assert len(checker.failures) == 2 and "x_1_0" in checker.failures[1]


def test_checks_hold_one_exit_file_open_at_a_time():
    from rbqe_tf.conversion.exporter import _OneExitFileOpen
    opened = []
    models = _OneExitFileOpen(lambda name: opened.append(name) or name.upper())
    for name in ["stage_1", "exit_1", "exit_1", "exit_2", "score_jpeg", "stage_1", "exit_1"]:
        assert models[name] == name.upper()
    assert opened == ["stage_1", "exit_1", "exit_2", "score_jpeg", "exit_1"]  # exit_1 reopened
    assert sorted(models) == ["exit_1", "score_jpeg", "stage_1"]


def test_tensor_details_need_no_allocated_buffers(export_tiny):
    folder = export_tiny("int8_full_int8_io")
    for name in ("exit_5", "stage_3"):
        path = os.path.join(folder, f"{name}.tflite")
        full = make_interpreter(path, 1)
        bare = make_interpreter(path, 1, xnnpack=False, allocate=False)
        for a, b in ((full, bare), (full.get_signature_runner(), bare.get_signature_runner())):
            assert str(a.get_input_details()) == str(b.get_input_details())
            assert str(a.get_output_details()) == str(b.get_output_details())
