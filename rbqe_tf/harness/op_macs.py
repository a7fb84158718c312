"""Operator count and multiply-accumulates per op type of a .tflite file (no TensorFlow).

The static profile used where no op-level timing is available: MACs follow the
convention of ``rbqe_tf.macs`` (one per weight multiply of a convolution-type op):
CONV_2D output elements × kh·kw·Cin, DEPTHWISE_CONV_2D output elements × kh·kw,
TRANSPOSE_CONV input elements × kh·kw·Cout; other ops count 0 MACs.
"""
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from rbqe_tf.litert.flatbuffer import is_constant, operators

_TYPE_BYTES = {schema.TensorType.FLOAT32: 4, schema.TensorType.FLOAT16: 2,
               schema.TensorType.INT32: 4, schema.TensorType.INT64: 8,
               schema.TensorType.INT16: 2, schema.TensorType.INT8: 1,
               schema.TensorType.UINT8: 1, schema.TensorType.BOOL: 1}


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


def bytes_of(model, op, sg):
    """Bytes one operator ``op`` of ``model`` reads and writes, from tensor shapes and
    dtypes: ``{"in": activations read, "weights": constants read, "out": written}`` —
    the lower bound of its memory traffic that a roofline needs."""
    moved = {"in": 0, "weights": 0, "out": 0}
    for key, tensors in (("in", op.inputs), ("out", op.outputs)):
        for i in tensors:
            if i < 0:
                continue
            t = sg.tensors[i]
            n = _numel(t.shape) * _TYPE_BYTES.get(t.type, 4)
            moved["weights" if key == "in" and is_constant(model, t) else key] += n
    return moved


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
