"""Operator count and multiply-accumulates per op type of a .tflite file (no TensorFlow).

The static profile used where no op-level timing is available: MACs follow the
convention of ``rbqe_tf.macs`` (one per weight multiply of a convolution-type op):
CONV_2D output elements × kh·kw·Cin, DEPTHWISE_CONV_2D output elements × kh·kw,
TRANSPOSE_CONV input elements × kh·kw·Cout; other ops count 0 MACs.
"""
import numpy as np

from rbqe_tf.litert.flatbuffer import operators


def _numel(shape):
    return int(np.prod(shape)) if shape is not None else 0


def macs_of(name, op, sg):
    """MACs of one operator ``op`` of type ``name`` in subgraph ``sg``."""
    shape = [sg.tensors[i].shape for i in op.inputs]
    out = sg.tensors[op.outputs[0]].shape
    if name == "CONV_2D":  # weights [Cout, kh, kw, Cin]
        return _numel(out) * _numel(shape[1][1:])
    if name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, C·multiplier]
        return _numel(out) * _numel(shape[1][1:3])
    if name == "TRANSPOSE_CONV":  # inputs: output shape, weights [Cout, kh, kw, Cin], x
        return _numel(shape[2]) * _numel(shape[1][:3])
    return 0


def op_macs(data):
    """{op type: {"count": n, "macs": m}} for the .tflite bytes ``data``, by MACs then name."""
    _, ops = operators(data)
    table = {}
    for name, op, sg in ops:
        entry = table.setdefault(name, {"count": 0, "macs": 0})
        entry["count"] += 1
        entry["macs"] += macs_of(name, op, sg)
    return dict(sorted(table.items(), key=lambda kv: (-kv[1]["macs"], kv[0])))


def read_op_macs(path):
    with open(path, "rb") as f:
        return op_macs(f.read())
