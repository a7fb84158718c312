"""The export graphs' sub-pixel up-sampling (rbqe_tf.conversion.graphs.SubpixelUpsampling):
a 2×2 stride-2 transposed conv as a 1×1 conv + DEPTH_TO_SPACE, against a NumPy
reference and the Keras model, and the files it gives (GPU allow-list, one XNNPACK
partition)."""
import collections

import keras
import numpy as np
import pytest

from rbqe_tf.conversion.convert import convert
from rbqe_tf.conversion.graphs import (SubpixelUpsampling, export_model, fixed_tile_model,
                                       model_graphs)
from rbqe_tf.conversion.optimize import optimize
from rbqe_tf.litert.flatbuffer import gpu_problems, op_counts, operators, pack


def transposed_conv_2x2_s2(x, kernel, bias, relu):
    """NumPy 2×2 stride-2 'valid' transposed conv, by its definition:
    out[2i+a, 2j+b, o] = Σ_c x[i, j, c]·K[a, b, o, c] + bias[o]."""
    n, h, w, _ = x.shape
    out = np.zeros((n, 2 * h, 2 * w, kernel.shape[2]), np.float64)
    for a in range(2):
        for b in range(2):
            out[:, a::2, b::2] = np.einsum("nhwc,oc->nhwo", x, kernel[a, b]) + bias
    return np.maximum(out, 0) if relu else out


@pytest.mark.parametrize("activation", ["relu", None])
def test_subpixel_equals_transposed_conv_and_numpy(activation):
    rng = np.random.default_rng(0)
    layer = keras.layers.Conv2DTranspose(6, 2, strides=2, activation=activation)
    x = rng.standard_normal((2, 5, 7, 3)).astype(np.float32)
    layer.build(x.shape)
    layer.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    expected = np.asarray(layer(x))
    assert SubpixelUpsampling.applies(layer)
    got = np.asarray(SubpixelUpsampling(layer)(x))
    kernel, bias = layer.get_weights()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got, transposed_conv_2x2_s2(x, kernel, bias, activation), atol=1e-5)
    assert (got == 0).any() == (activation == "relu")


@pytest.mark.parametrize("layer", [
    keras.layers.Conv2DTranspose(4, 3, strides=2),  # overlapping taps
    keras.layers.Conv2DTranspose(4, 2, strides=2, padding="same"),
    keras.layers.Conv2DTranspose(4, 2, strides=2, activation="tanh"),
    keras.layers.Conv2D(4, 2, strides=2)])
def test_other_layers_are_left_alone(layer):
    assert not SubpixelUpsampling.applies(layer)


def test_export_graphs_equal_the_keras_model(tiny_model):
    fixed = fixed_tile_model(tiny_model, 64)
    assert sum(isinstance(layer, SubpixelUpsampling)
               for layer in export_model(fixed.exit_model(5)).layers) == 15
    graphs = model_graphs(fixed)
    rng = np.random.default_rng(1)
    y = rng.random((2, 64, 64, 1), np.float32)
    for k, expected in enumerate(fixed(y), 1):
        np.testing.assert_allclose(graphs[f"exit_{k}"].reference([y])[0], expected, atol=1e-5)
    features = []
    for k, stage in enumerate(fixed.stage_models(), 1):
        out = stage([y] + features)
        expected = [np.asarray(t) for t in (out if isinstance(out, (list, tuple)) else [out])]
        got = graphs[f"stage_{k}"].reference([y] + features)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, float(np.abs(b).max())))
        features += expected[1:]


def test_files_hold_depth_to_space_on_the_gpu_list_and_one_xnnpack_partition(
        tiny_model, interpreter_of):
    data, _ = optimize(convert(model_graphs(fixed_tile_model(tiny_model, 64))["exit_5"], "fp32"))
    counts = op_counts(data)
    assert counts["DEPTH_TO_SPACE"] == 15 and "TRANSPOSE_CONV" not in counts
    assert "RELU" not in counts  # fused into the 1×1 CONV_2D before the re-arrangement
    assert gpu_problems(data) == []
    ops = interpreter_of(data)._get_ops_details()
    assert collections.Counter(o["op_name"] for o in ops)["DELEGATE"] == 1
    model, ops = operators(data)
    for name, op, _ in ops:
        if name == "DEPTH_TO_SPACE":
            op.builtinOptions.blockSize = 1
    assert any("block size 1" in p for p in gpu_problems(pack(model)))
