"""A fully convolutional .tflite model re-shaped for a larger tile (NumPy + LiteRT schema).

int8 calibration runs the float graph once per sample in TensorFlow's calibrator,
so its cost grows with the tile's area (all exit and stage files of the shipped model:
157 s at 256² with one calibration image on a 2-core CPU, about four times that at
512²). Quantization ranges are per-tensor statistics of
the activations, not of the tile size, so the exporter can calibrate at a small tile
and write the files at the large one: the inputs' height and width are multiplied by
``factor`` and so is the constant output shape of each TRANSPOSE_CONV, the only
shape-carrying constant of the exit and stage graphs; every other tensor's shape is
then what LiteRT's own shape inference gives (pooled 1×1 maps stay 1×1). Anything
else that depends on the spatial size (RESHAPE targets, slice bounds) makes
:func:`retile` refuse the model rather than guess.
"""
import numpy as np
from ai_edge_litert import interpreter as litert

from rbqe_tf.litert.flatbuffer import is_constant, operators, pack

# Ops whose constants do not depend on the tile (weights, paddings, axes).
TILE_FREE_OPS = frozenset({
    "ADD", "MUL", "SUB", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "LOGISTIC",
    "MEAN", "PAD", "RELU", "RELU6", "QUANTIZE", "DEQUANTIZE", "TRANSPOSE_CONV",
    "DEPTH_TO_SPACE"})


def _scaled(shape, factor):
    shape = [int(s) for s in shape]
    return [shape[0], shape[1] * factor, shape[2] * factor, shape[3]]


def retile(data, factor):
    """The .tflite bytes ``data`` with every spatial size multiplied by ``factor``."""
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if factor == 1:
        return data
    model, ops = operators(data)
    unknown = sorted({name for name, _, _ in ops} - TILE_FREE_OPS)
    if unknown:
        raise ValueError(f"cannot re-tile a model with {', '.join(unknown)}")
    if len(model.subgraphs) != 1:
        raise ValueError("cannot re-tile a model with several subgraphs")
    sg = model.subgraphs[0]
    patched = set()
    for name, op, _ in ops:
        if name == "TRANSPOSE_CONV":  # inputs: output shape (int32 [1, H, W, C]), weights, x
            buffer = model.buffers[sg.tensors[op.inputs[0]].buffer]
            if id(buffer) not in patched:  # identical constants share one buffer
                shape = np.frombuffer(bytes(bytearray(buffer.data)), np.int32)
                buffer.data = np.array(_scaled(shape, factor), np.int32).view(np.uint8)
                patched.add(id(buffer))
    for i in sg.inputs:
        sg.tensors[i].shape = _scaled(sg.tensors[i].shape, factor)
    # LiteRT's shape inference (no delegate) gives every other tensor's new shape.
    interpreter = litert.Interpreter(
        model_content=pack(model),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    for d in interpreter.get_tensor_details():
        if d["index"] >= len(sg.tensors):  # kernels' scratch tensors, not in the file
            continue
        tensor = sg.tensors[d["index"]]
        if not is_constant(model, tensor):
            tensor.shape = [int(v) for v in d["shape"]]
            if tensor.shapeSignature is not None:
                tensor.shapeSignature = list(tensor.shape)
    return pack(model)
