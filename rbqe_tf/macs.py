"""Exact multiply-accumulate (MAC) counts from the built Keras graph.

Convention: one MAC per weight multiply of a convolution-type layer; biases,
activations, additions, concatenation, padding, pooling and ECA's channel scaling
are not counted (ECA's 1-D conv is: 3 MACs per channel). A 2×2 stride-2
transposed conv costs ``in_pixels · in_channels · 4 · out_channels`` (thop
counts it per *output* pixel, 4× too high, which is why the paper's figures are
larger). Counts walk the graph backwards from a model's outputs, so only the
layers that produce those outputs are counted, once per call.
"""
import keras
from keras import layers

from rbqe_tf.model import ECA, RBQE


def _layer_macs(op, node):
    inp, out = node.input_tensors[0].shape, node.output_tensors[0].shape
    if isinstance(op, layers.DepthwiseConv2D):
        kh, kw = op.kernel_size
        return out[1] * out[2] * out[3] * kh * kw
    if isinstance(op, layers.Conv2DTranspose):
        kh, kw = op.kernel_size
        return inp[1] * inp[2] * inp[3] * kh * kw * op.filters
    if isinstance(op, layers.Conv2D):
        kh, kw = op.kernel_size
        return out[1] * out[2] * out[3] * kh * kw * inp[3] // op.groups
    if isinstance(op, ECA):
        return 3 * inp[-1]
    if op.weights:
        raise TypeError(f"no MAC rule for layer {op.name} ({type(op).__name__})")
    return 0


def count_macs(model):
    """Exact MACs of one forward pass of a functional ``model`` with static shapes."""
    for t in model.inputs:
        if any(d is None for d in t.shape[1:]):
            raise ValueError(f"{model.name}: input {t.name} has a dynamic shape {t.shape}; "
                             "build the model with a fixed input_size")
    seen, total = set(), 0
    stack = list(model.outputs)
    while stack:
        op, node_index, _ = stack.pop()._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in seen or isinstance(op, keras.layers.InputLayer):
            continue
        seen.add(id(node))
        total += _layer_macs(op, node)
        stack.extend(node.input_tensors)
    return total


def _fixed_size_model(model, height, width):
    config = {**model.get_config(), "input_size": [height, width]}
    return RBQE.from_config(config)


def macs_per_exit(model, height, width):
    """MACs of the monolithic path to each exit at ``height``×``width``."""
    fixed = _fixed_size_model(model, height, width)
    return [count_macs(fixed.exit_model(k)) for k in range(1, fixed.rbqe_config.num_exits + 1)]


def macs_per_stage(model, height, width):
    """MACs of each stage; stages 1..k sum to exit k plus the heads of exits < k."""
    fixed = _fixed_size_model(model, height, width)
    return [count_macs(stage) for stage in fixed.stage_models()]
