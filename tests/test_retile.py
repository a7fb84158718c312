"""Re-shaping .tflite files to a larger tile (rbqe_tf.conversion.retile) and int8 exports calibrated
at a smaller tile: checked against models converted natively at the large tile."""
import numpy as np
import pytest

from rbqe_tf.conversion.convert import convert
from rbqe_tf.conversion.exporter import Exporter
from rbqe_tf.conversion.graphs import fixed_tile_model, model_graphs, score_graph
from rbqe_tf.conversion.retile import retile
from rbqe_tf.harness.op_profile import single_op_models
from rbqe_tf.litert.flatbuffer import operators
from rbqe_tf.litert.interpreter import make_interpreter
from rbqe_tf.litert.manifest import read_manifest


def _shapes(data):
    """Sorted shapes of every tensor of the .tflite bytes ``data``."""
    model, _ = operators(data)
    return sorted(tuple(int(v) for v in t.shape) for t in model.subgraphs[0].tensors)


def _run(path, feeds_by_name):
    interpreter = make_interpreter(str(path), 1)
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], feeds_by_name[d["name"]])
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"])
            for d in interpreter.get_output_details()}


@pytest.fixture(scope="module")
def graphs(tiny_model):
    """tile → the tiny model's exit and stage graphs (traced once for the module)."""
    cache = {}

    def at(tile):
        if tile not in cache:
            cache[tile] = model_graphs(fixed_tile_model(tiny_model, tile))
        return cache[tile]
    return at


@pytest.mark.parametrize("name", ["exit_5", "stage_3"])
def test_retiled_float_model_equals_the_native_conversion(tmp_path, graphs, name,
                                                         interpreter_of):
    small, large = graphs(64)[name], graphs(128)[name]
    retiled_data, native_data = retile(convert(small, "fp32"), 2), convert(large, "fp32")
    (tmp_path / "retiled.tflite").write_bytes(retiled_data)
    (tmp_path / "native.tflite").write_bytes(native_data)
    # Every stored shape is the native one (pooled 1×1 maps stay 1×1), so each op
    # cut out alone runs as it does in the file.
    assert _shapes(retiled_data) == _shapes(native_data)
    for _, _, _, op_data in single_op_models(retiled_data):
        interpreter_of(op_data)
    native = make_interpreter(str(tmp_path / "native.tflite"), 1)
    rng = np.random.default_rng(0)
    feeds = {d["name"]: rng.random(d["shape"], np.float32) for d in native.get_input_details()}
    got = _run(tmp_path / "retiled.tflite", feeds)
    want = _run(tmp_path / "native.tflite", feeds)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].shape == want[key].shape and got[key].shape[1] in (128, 64, 32, 16, 8, 4)
        np.testing.assert_allclose(got[key], want[key], atol=1e-6)


def test_retile_refuses_tile_dependent_ops_and_bad_factors(graphs):
    score = convert(score_graph("jpeg", 64), "fp32")  # patch grid via STRIDED_SLICE
    with pytest.raises(ValueError, match="STRIDED_SLICE"):
        retile(score, 2)
    exit_1 = convert(graphs(64)["exit_1"], "fp32")
    for factor in (0, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            retile(exit_1, factor)
    assert retile(exit_1, 1) is exit_1


def test_exporter_tile_must_be_a_multiple_of_the_calibration_tile(tiny_model):
    with pytest.raises(ValueError, match="divides the tile 128"):
        Exporter(tiny_model, 128, calib_tile=96)


@pytest.mark.slow
def test_int8_export_calibrated_at_a_smaller_tile_passes_the_full_tile_checks(tmp_path, tiny_model,
                                                                              samples_dir):
    """Calibrated at 64², written and verified at 128² (parity with Keras at 128²,
    ΔPSNR lost per exit): the manifest records both tiles."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "chelsea_q30.jpg").write_bytes((samples_dir / "chelsea_q30.jpg").read_bytes())
    exporter = Exporter(tiny_model, 128, calib_tile=64)
    manifest = exporter.export(str(tmp_path / "int8"), "int8_full_fp32_io", (str(images), 1),
                               (str(images), 1), log=lambda line: None)
    assert manifest == read_manifest(str(tmp_path / "int8"))
    assert manifest["tile"] == 128 and manifest["calibration"]["tile"] == 64
    y = next(t for t in manifest["files"]["exit_5"]["inputs"] if t["name"] == "y")
    assert y["shape"] == [1, 128, 128, 1]
    assert max(manifest["verification"]["delta_psnr_lost"]) < 0.5
