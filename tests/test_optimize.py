"""Graph rewrites of exported files (rbqe_tf.conversion.optimize) against the converter's own
output, and the op-level profile (rbqe_tf.harness.op_profile) on the tiny export."""
import collections

import numpy as np
import pytest

from rbqe_tf.conversion import graphs
from rbqe_tf.conversion.convert import convert
from rbqe_tf.conversion.graphs import fixed_tile_model, model_graphs
from rbqe_tf.conversion.optimize import optimize
from rbqe_tf.harness import op_profile
from rbqe_tf.litert.flatbuffer import op_counts, operators
from rbqe_tf.litert.manifest import read_manifest


def _outputs(interpreter, feeds):
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], feeds[d["name"]])
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def _partitions(interpreter):
    ops = interpreter._get_ops_details()
    return collections.Counter(o["op_name"] for o in ops)["DELEGATE"]


def _feeds(interpreter, rng):
    return {d["name"]: (rng.random(d["shape"], np.float32) if d["dtype"] == np.float32
                        else rng.integers(-128, 128, d["shape"]).astype(d["dtype"]))
            for d in interpreter.get_input_details()}


def test_float_rewrites_keep_outputs_and_make_one_xnnpack_partition(tiny_model, interpreter_of,
                                                                    monkeypatch):
    # The converter's own TRANSPOSE_CONV + RELU pairs (QAT graphs keep them): traced
    # without the sub-pixel rewrite of the export graphs.
    monkeypatch.setattr(graphs, "export_model", lambda model: model)
    data = convert(model_graphs(fixed_tile_model(tiny_model, 64))["exit_5"], "fp32")
    assert op_counts(data)["TRANSPOSE_CONV"] == 15
    rewritten, counts = optimize(data)
    assert counts == {"fused_relus": 15, "split_concatenations": 1}
    before, after = op_counts(data), op_counts(rewritten)
    assert "RELU" not in after and after["CONCATENATION"] == before["CONCATENATION"] + 1
    assert _partitions(interpreter_of(data)) > 1 and _partitions(interpreter_of(rewritten)) == 1
    feeds = _feeds(interpreter_of(data), np.random.default_rng(0))
    for a, b in zip(_outputs(interpreter_of(data), feeds),
                    _outputs(interpreter_of(rewritten), feeds)):
        np.testing.assert_array_equal(a, b)
    assert optimize(rewritten) == (rewritten, {"fused_relus": 0, "split_concatenations": 0})


def test_int8_files_of_an_export_are_rewritten_and_pass_its_parity_checks(export_tiny):
    """The export's checks (int8 parity with the Keras stages, ΔPSNR lost) run on the
    rewritten files, so a manifest means they passed."""
    manifest = read_manifest(export_tiny("int8_full_int8_io"))
    for k in range(1, 6):
        entry = manifest["files"][f"stage_{k}"]
        assert entry["rewrites"] == {"fused_relus": 0, "split_concatenations": int(k == 5)}
        assert "RELU" not in entry["ops"] and "TRANSPOSE_CONV" not in entry["ops"]
        assert entry["ops"]["DEPTH_TO_SPACE"] == k  # the sub-pixel up-sampling (graphs.py)
    assert manifest["files"]["exit_5"]["rewrites"] == {"fused_relus": 0,
                                                      "split_concatenations": 1}
    assert manifest["files"]["score_jpeg"]["rewrites"] is None
    assert min(manifest["verification"]["parity"][f"stage_{k}"] for k in range(1, 6)) > 25


def test_op_profile_times_every_op_of_the_file(export_tiny):
    path = f"{export_tiny('fp32')}/exit_2.tflite"
    data = open(path, "rb").read()
    result = op_profile.profile(path, num_threads=1, runs=2, warmup=0)
    counts = op_counts(data)
    assert {k: v["count"] for k, v in result["by_type"].items()} == counts
    assert result["ops_sum_ms"] == pytest.approx(sum(v["ms"] for v in result["by_type"].values()))
    assert sum(v["share"] for v in result["by_type"].values()) == pytest.approx(1.0)
    assert result["whole_median_ms"] > 0 and len(result["slowest"]) == 10
    assert result["not_timed"] == []
    conv = result["by_type"]["CONV_2D"]
    assert conv["macs"] > 0 and conv["gmacs_per_s"] > 0
    assert "| CONV_2D |" in op_profile.markdown(result)
    # Each one-op model holds exactly one operator of the file, in the file's order.
    singles = op_profile.single_op_models(data)
    assert [name for _, name, _, _ in singles] == [name for name, _, _ in operators(data)[1]]
    assert all(op_counts(d) == {name: 1} for _, name, _, d in singles)
