"""TensorFlow graphs, at a fixed tile size, of every model that becomes a .tflite.

Each graph is traced with static shapes (batch 1) through Keras' ``stateless_call`` with
the weights as constants, so it holds no variables: the converter never sees a Keras
variable (what makes ``from_concrete_functions`` on a Keras 3 model write NaN-only
files: docs/method.md, Toolchain notes), and tracing plus conversion take about a
quarter of the time of ``from_keras_model``'s SavedModel round trip. Each trace is
checked against the Keras model itself when built (:data:`TRACE_TOLERANCE`), then serves
as the fast float reference of :mod:`rbqe_tf.conversion.verify` and of calibration. A QAT model's
graphs (:func:`qat_graphs`) are frozen from its tf-keras exit and stage models instead.

Inputs are named by their ``TensorSpec`` (``y``, ``x_1_0``, ``exit``) and outputs
returned as a dict, so the TFLite file's signature carries the logical names
(TFLite orders the tensors as it likes; the manifest maps them).

Each 2×2 stride-2 ``Conv2DTranspose`` is traced as the equal 1×1 convolution to four times
the channels followed by depth-to-space (:class:`SubpixelUpsampling`): XNNPACK runs the
transposed convolution as four small-K sub-convolutions and the 1×1 one on its GEMM
(docs/export.md, "Graph rewrites"); the trace check compares with the unrewritten model.
"""
import dataclasses
import gc

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from rbqe_tf.conversion.score_graph import patch_maps
from rbqe_tf.litert.interpreter import return_freed_memory
from rbqe_tf.model import RBQE, feature_name, stage_feature_keys

TRACE_TOLERANCE = 1e-5


@dataclasses.dataclass
class Graph:
    """One model to convert: a variable-free ConcreteFunction (batch 1) and its I/O names."""

    name: str  # file stem: exit_3, stage_2, score_jpeg
    function: object
    input_names: list
    output_names: list  # logical names, in output order
    fake_quant: bool = False  # holds QAT fake quantization (rbqe_tf.qat_model): int8
    # conversion takes its ranges from the graph, with no representative dataset

    def reference(self, inputs):
        """Float outputs (``output_names`` order) for float32 input batches (input order)."""
        outs = [self.function(*[tf.constant(x[i:i + 1], tf.float32) for x in inputs])
                for i in range(len(inputs[0]))]
        return [np.concatenate([np.asarray(o[name]) for o in outs]) for name in self.output_names]


def release_memory():
    """Frees what TensorFlow's tracing and each conversion left behind: their objects sit
    in reference cycles until a collection, and glibc keeps the freed memory of every
    thread's arena until asked to hand it back (no-op elsewhere)."""
    gc.collect()
    return_freed_memory()


def fixed_tile_model(model, tile):
    """``model`` rebuilt with a static tile×tile input and the same weights."""
    fixed = RBQE.from_config({**model.get_config(), "input_size": [tile, tile]})
    fixed.set_weights(model.get_weights())
    return fixed


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _named(names, outputs):
    return dict(zip(names, _as_list(outputs)))


def _trace(fn, specs):
    return tf.function(fn, input_signature=specs, autograph=False).get_concrete_function()


class SubpixelUpsampling(keras.layers.Layer):
    """A 2×2 stride-2 ``Conv2DTranspose`` (no overlap between taps) as a 1×1 convolution
    to 4·C_out channels and depth-to-space: channel (a·2 + b)·C_out + o holds tap (a, b)
    of output o, the bias is tiled four times, and ReLU commutes with the re-arrangement.
    Export graphs only: its weights are constants, not variables."""

    def __init__(self, transposed):
        super().__init__(name=f"{transposed.name}_subpixel")
        kernel, bias = (w.numpy() for w in transposed.weights)  # [2, 2, O, I], [O]
        self.kernel = kernel.transpose(3, 0, 1, 2).reshape(1, 1, kernel.shape[3], -1)
        self.bias = np.tile(bias, 4)
        self.relu = transposed.get_config()["activation"] == "relu"

    @staticmethod
    def applies(layer):
        """Whether ``layer`` is a transposed conv this rewrite reproduces exactly."""
        if type(layer) is not keras.layers.Conv2DTranspose:
            return False
        c = layer.get_config()
        return (tuple(c["kernel_size"]) == tuple(c["strides"]) == (2, 2)
                and c["padding"] == "valid" and c["output_padding"] is None
                and tuple(c["dilation_rate"]) == (1, 1) and c["use_bias"]
                and c["data_format"] == "channels_last" and c["activation"] in ("relu", "linear"))

    def call(self, x):
        x = tf.nn.bias_add(tf.nn.conv2d(x, self.kernel, 1, "VALID"), self.bias)
        return tf.nn.depth_to_space(tf.nn.relu(x) if self.relu else x, 2)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else 2 * h, None if w is None else 2 * w,
                self.kernel.shape[-1] // 4)


def export_model(keras_model):
    """``keras_model`` with every :class:`SubpixelUpsampling`-able layer replaced (other
    layers shared, not copied)."""
    if not any(SubpixelUpsampling.applies(layer) for layer in keras_model.layers):
        return keras_model
    return keras.models.clone_model(keras_model, clone_function=lambda layer: (
        SubpixelUpsampling(layer) if SubpixelUpsampling.applies(layer) else layer))


def _keras_graph(name, keras_model, output_names, seed):
    specs = [tf.TensorSpec([1, *t.shape[1:]], tf.float32, name=t.name)
             for t in keras_model.inputs]
    traced = export_model(keras_model)
    trainable = [w.numpy() for w in traced.trainable_variables]
    non_trainable = [w.numpy() for w in traced.non_trainable_variables]
    as_list = isinstance(keras_model.input, (list, tuple))

    def fn(*inputs):
        out, _ = traced.stateless_call(
            [tf.constant(w) for w in trainable], [tf.constant(w) for w in non_trainable],
            list(inputs) if as_list else inputs[0])
        return _named(output_names, out)

    graph = Graph(name, _trace(fn, specs), [s.name for s in specs], output_names)
    rng = np.random.default_rng(seed)
    probe = [rng.random(s.shape, np.float32) for s in specs]
    # Keras runs as a graph here: an eager call keeps every intermediate of the tile alive.
    keras_call = tf.function(lambda x: keras_model(x, training=False), autograph=False)
    expected = _as_list(keras_call(probe if as_list else probe[0]))
    error = max(float(np.abs(a - np.asarray(e)).max())
                for a, e in zip(graph.reference(probe), expected))
    if not error <= TRACE_TOLERANCE:
        raise RuntimeError(f"{name}: traced graph differs from Keras by {error:.2e}")
    return graph


def model_graphs(fixed):
    """Graphs ``exit_1..K`` (y → exit k) and ``stage_1..K`` of a fixed-tile RBQE."""
    graphs = {}
    num_exits = fixed.rbqe_config.num_exits
    for k in range(1, num_exits + 1):
        graphs[f"exit_{k}"] = _keras_graph(f"exit_{k}", fixed.exit_model(k), ["exit"], k)
    for k, stage in enumerate(fixed.stage_models(), 1):
        names = ["exit"] + [feature_name(key) for key in fixed.stage_feature_keys(k)]
        graphs[f"stage_{k}"] = _keras_graph(f"stage_{k}", stage, names, k)
    return graphs


def score_graph(codec, tile):
    """Graph ``score_<codec>``: an exit [1, T, T, 1] → its per-patch score maps."""
    spec = tf.TensorSpec([1, tile, tile, 1], tf.float32, name="exit")
    return Graph(f"score_{codec}", _trace(lambda y: {"patches": patch_maps(y, codec)}, [spec]),
                 ["exit"], ["patches"])


def _frozen_graph(name, model, output_names, tile):
    """Graph of a tf-keras ``model`` (inference mode, batch 1, tile×tile): variables
    frozen to constants, outputs returned as a dict of ``output_names``."""
    specs = [tf.TensorSpec([1, tile >> _level(t.name), tile >> _level(t.name), t.shape[-1]],
                           tf.float32, name=t.name.split(":")[0]) for t in model.inputs]

    def trace(fn):
        return tf.function(fn, input_signature=specs, autograph=False).get_concrete_function()

    frozen = convert_variables_to_constants_v2(trace(
        lambda *inputs: model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)))

    def named(*inputs):
        out = frozen(*inputs)
        return dict(zip(output_names, out if isinstance(out, (list, tuple)) else [out]))

    return Graph(name, trace(named), [s.name for s in specs], output_names, fake_quant=True)


def _level(input_name):
    """Resolution level of a model input (``y`` → 0, ``x_i_j`` → i)."""
    return int(input_name.split("_")[1]) if input_name.startswith("x_") else 0


def qat_graphs(exits, stages, cfg, tile):
    """Graphs ``exit_1..K`` and ``stage_1..K`` of a fake-quantized (QAT) model, from its
    exit and stage models (``rbqe_tf.qat_model.exit_models`` / ``stage_models``)."""
    graphs = {f"exit_{k}": _frozen_graph(f"exit_{k}", model, ["exit"], tile)
              for k, model in enumerate(exits, 1)}
    for k, stage in enumerate(stages, 1):
        names = ["exit"] + [feature_name(key) for key in stage_feature_keys(cfg, k)]
        graphs[f"stage_{k}"] = _frozen_graph(f"stage_{k}", stage, names, tile)
    return graphs
