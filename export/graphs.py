"""TensorFlow graphs, at a fixed tile size, of every model that becomes a .tflite.

Each graph is traced with static shapes (batch 1) through Keras' ``stateless_call``
with the weights as constants, so it holds no variables: the converter never sees a
Keras variable (what makes ``from_concrete_functions`` on a Keras 3 model write
NaN-only files, PITFALLS), and tracing plus conversion take about a quarter of the
time of ``from_keras_model``'s SavedModel round trip. Each trace is checked against
the Keras model itself when built (:data:`TRACE_TOLERANCE`), then serves as the fast
float reference of :mod:`export.verify` and of calibration.

Inputs are named by their ``TensorSpec`` (``y``, ``x_1_0``, ``exit``) and outputs
returned as a dict, so the TFLite file's signature carries the logical names
(TFLite orders the tensors as it likes; the manifest maps them).
"""
import dataclasses

import numpy as np
import tensorflow as tf

from export.score_graph import patch_maps
from rbqe_tf.model import RBQE

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


def feature_name(key):
    """Tensor name of feature node x[i, j] (the stage models' input names)."""
    return f"x_{key[0]}_{key[1]}"


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


def _keras_graph(name, keras_model, output_names, seed):
    specs = [tf.TensorSpec([1, *t.shape[1:]], tf.float32, name=t.name)
             for t in keras_model.inputs]
    trainable = [w.numpy() for w in keras_model.trainable_variables]
    non_trainable = [w.numpy() for w in keras_model.non_trainable_variables]
    as_list = isinstance(keras_model.input, (list, tuple))

    def fn(*inputs):
        out, _ = keras_model.stateless_call(
            [tf.constant(w) for w in trainable], [tf.constant(w) for w in non_trainable],
            list(inputs) if as_list else inputs[0])
        return _named(output_names, out)

    graph = Graph(name, _trace(fn, specs), [s.name for s in specs], output_names)
    rng = np.random.default_rng(seed)
    probe = [rng.random(s.shape, np.float32) for s in specs]
    expected = _as_list(keras_model(probe if as_list else probe[0]))
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
