"""Operator inventory of a .tflite file and a GPU-delegate allow-list check; the file
is read (and, for rbqe_tf.conversion.optimize / retile, written) with LiteRT's schema
module.

``tf.lite.experimental.Analyzer``'s GPU check reports every model as compatible
(PITFALLS), so this reads the flatbuffer itself (LiteRT's schema module, no
TensorFlow) and checks each operator against the ops the TFLite GPU delegate
implements, with the constraints that matter for this network:

- every non-constant tensor an op reads or writes is 4-D (the delegate works on
  BHWC; this is what rules out SQUEEZE/EXPAND_DIMS-style rank changes);
- weights, paddings, reduction axes, slice bounds and reshape targets are constants;
- ADD/SUB/MUL/DIV/MAXIMUM/MINIMUM have exactly two inputs;
- fused activations are NONE, RELU, RELU_N1_TO_1, RELU6 or TANH;
- STRIDED_SLICE has positive strides and no ellipsis/new-axis/shrink masks;
- DEPTH_TO_SPACE has a block size above 1 (TensorFlow's
  ``tensorflow/lite/tools/versioning/gpu_compatibility.cc`` refuses 1 as a no-op).

A DEQUANTIZE of a constant (fp16 weights) counts as a constant, as the delegate folds it.

Op versions are not checked; a delegate on the device remains the final judge.
"""
import collections

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_FUSED_OK = {schema.ActivationFunctionType.NONE, schema.ActivationFunctionType.RELU,
             schema.ActivationFunctionType.RELU_N1_TO_1, schema.ActivationFunctionType.RELU6,
             schema.ActivationFunctionType.TANH}
_BINARY = {"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"}
_UNARY = {"LOGISTIC", "RELU", "RELU6", "TANH", "ABS", "RSQRT", "SQRT", "LOG", "EXP",
          "AVERAGE_POOL_2D", "MAX_POOL_2D", "QUANTIZE", "DEQUANTIZE", "CONCATENATION",
          "DEPTH_TO_SPACE"}
# Inputs (by position) that must be constants.
_CONSTANT_INPUTS = {"CONV_2D": (1,), "DEPTHWISE_CONV_2D": (1,), "TRANSPOSE_CONV": (0, 1),
                    "PAD": (1,), "MEAN": (1,), "SUM": (1,), "RESHAPE": (1,),
                    "STRIDED_SLICE": (1, 2, 3)}
GPU_OPS = frozenset(_BINARY | _UNARY | set(_CONSTANT_INPUTS))


def _model(data):
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(data), 0))


def pack(model):
    """.tflite bytes of a schema ``ModelT`` (after edits by rbqe_tf.conversion.optimize /
    retile)."""
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def is_constant(model, tensor):
    """Whether ``tensor`` (a tensor of ``model``) has its data in the file."""
    b = model.buffers[tensor.buffer] if tensor.buffer else None
    return b is not None and ((b.data is not None and len(b.data) > 0) or b.offset > 1)


def _op_name(code):
    return _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"#{code.builtinCode}")


def operators(data):
    """[(op name, operator, subgraph)] of every operator in the .tflite bytes ``data``."""
    model = _model(data)
    names = [_op_name(code) for code in model.operatorCodes]
    return model, [(names[op.opcodeIndex], op, sg) for sg in model.subgraphs
                   for op in sg.operators]


def op_counts(data):
    """{op name: count}, sorted by name."""
    _, ops = operators(data)
    return dict(sorted(collections.Counter(name for name, _, _ in ops).items()))


def gpu_problems(data):
    """One line per operator the GPU delegate would not take; [] if all are fine."""
    model, ops = operators(data)
    folded = set()  # (subgraph id, tensor) outputs of DEQUANTIZE on a constant

    def buffer(sg, t):
        return model.buffers[sg.tensors[t].buffer] if sg.tensors[t].buffer else None

    def constant(sg, t):
        return (id(sg), t) in folded or is_constant(model, sg.tensors[t])

    problems = []
    for n, (name, op, sg) in enumerate(ops):
        where = f"op {n} {name}"
        if name == "DEQUANTIZE" and constant(sg, op.inputs[0]):
            folded.add((id(sg), op.outputs[0]))
            continue
        if name not in GPU_OPS:
            problems.append(f"{where}: not a GPU-delegate op")
            continue
        inputs = [t for t in op.inputs if t >= 0]
        for pos in _CONSTANT_INPUTS.get(name, ()):
            if pos < len(inputs) and not constant(sg, inputs[pos]):
                problems.append(f"{where}: input {pos} must be a constant")
        for t in inputs + list(op.outputs):
            if not constant(sg, t) and len(sg.tensors[t].shape) != 4:
                problems.append(f"{where}: tensor {sg.tensors[t].name.decode()} has rank "
                                f"{len(sg.tensors[t].shape)}, not 4")
        if name in _BINARY and len(inputs) != 2:
            problems.append(f"{where}: {len(inputs)} inputs, not 2")
        options = op.builtinOptions
        activation = getattr(options, "fusedActivationFunction", schema.ActivationFunctionType.NONE)
        if activation not in _FUSED_OK:
            problems.append(f"{where}: fused activation {activation} is not supported")
        if name == "STRIDED_SLICE":
            if options.ellipsisMask or options.newAxisMask or options.shrinkAxisMask:
                problems.append(f"{where}: ellipsis/new-axis/shrink masks are not supported")
            strides = buffer(sg, inputs[3])
            if strides is not None and strides.data is not None and (
                    np.frombuffer(bytes(strides.data), np.int32) <= 0).any():
                problems.append(f"{where}: strides must be positive")
        if name == "DEPTH_TO_SPACE" and options.blockSize <= 1:
            problems.append(f"{where}: block size {options.blockSize} is not above 1")
    return problems
