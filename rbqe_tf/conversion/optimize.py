"""Graph rewrites the TFLite converter misses, applied to every exit and stage file
(NumPy + LiteRT schema). Each one keeps the arithmetic and lets XNNPACK (and the GPU
delegate) take the whole graph as one partition instead of falling back per op:

- **RELU after TRANSPOSE_CONV** (15 in the exit-5 graph): the converter leaves
  ``Conv2DTranspose(activation="relu")`` as two ops, and XNNPACK does not take an
  int8 RELU alone, so each one ran on the reference kernel and split the delegated
  graph. TRANSPOSE_CONV's own fused activation (op version 4) replaces it; the fused
  op writes the RELU's output tensor, so in int8 it requantizes straight to the
  RELU's output range, as the RELU did.
- **CONCATENATION of more than** :data:`MAX_CONCAT_INPUTS` **inputs** (the last U-Net++
  step joins six maps): XNNPACK takes at most five, so the op is split into a
  concatenation of the first inputs and a second one that appends the rest; the
  intermediate tensor carries the output's quantization, as all inputs already do.
"""
import copy

from ai_edge_litert import schema_py_generated as schema

from rbqe_tf.litert.flatbuffer import operators, pack

FUSED_ACTIVATION_VERSION = 4  # TRANSPOSE_CONV's first version with a fused activation
MAX_CONCAT_INPUTS = 5


def _fuse_relus(model, sg, names):
    readers = {}
    for op in sg.operators:
        for i in op.inputs:
            readers.setdefault(i, []).append(op)
    outputs, removed, fused = set(sg.outputs), set(), 0
    for op in sg.operators:
        if names[id(op)] != "TRANSPOSE_CONV" or op.outputs[0] in outputs:
            continue
        following = readers.get(op.outputs[0], [])
        if (op.builtinOptions.fusedActivationFunction != schema.ActivationFunctionType.NONE
                or len(following) != 1 or names[id(following[0])] != "RELU"):
            continue
        op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.RELU
        op.outputs = list(following[0].outputs)
        removed.add(id(following[0]))
        code = model.operatorCodes[op.opcodeIndex]
        code.version = max(code.version, FUSED_ACTIVATION_VERSION)
        fused += 1
    sg.operators = [op for op in sg.operators if id(op) not in removed]
    return fused


def _split_concatenations(sg, names):
    ops, split = [], 0
    for op in sg.operators:
        axis = op.builtinOptions.axis if names[id(op)] == "CONCATENATION" else None
        if axis is None or len(op.inputs) <= MAX_CONCAT_INPUTS:
            ops.append(op)
            continue
        out = sg.tensors[op.outputs[0]]
        head_inputs = list(op.inputs[:MAX_CONCAT_INPUTS])
        rank = len(out.shape)
        dim = axis % rank
        head = copy.deepcopy(out)
        head.name = (out.name or b"concat") + b"/head"
        head.shape = list(out.shape)
        head.shape[dim] = sum(int(sg.tensors[i].shape[dim]) for i in head_inputs)
        head.shapeSignature = None
        sg.tensors.append(head)
        first = copy.deepcopy(op)
        first.inputs, first.outputs = head_inputs, [len(sg.tensors) - 1]
        first.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.NONE
        op.inputs = [len(sg.tensors) - 1] + list(op.inputs[MAX_CONCAT_INPUTS:])
        names[id(first)] = "CONCATENATION"
        ops += [first, op]
        split += 1
    sg.operators = ops
    return split


def optimize(data):
    """(rewritten .tflite bytes, {"fused_relus": n, "split_concatenations": m})."""
    model, ops = operators(data)
    names = {id(op): name for name, op, _ in ops}
    counts = {"fused_relus": 0, "split_concatenations": 0}
    for sg in model.subgraphs:
        counts["fused_relus"] += _fuse_relus(model, sg, names)
        counts["split_concatenations"] += _split_concatenations(sg, names)
    if not any(counts.values()):
        return data, counts
    return pack(model), counts
