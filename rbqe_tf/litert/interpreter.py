"""One .tflite model under ai-edge-litert, fed and read by logical tensor name.

Tensors are exchanged as :class:`Value` (array + quantization): an int8 output stays
int8 and is passed to the next stage as it is when both sides share scale and zero
point (up to float32 round-off), else it is requantized (or dequantized / quantized
for float inputs).

:meth:`TFLiteModel.run_views` hands outputs over without copying them out: they stay
in the interpreter's own buffers (``Interpreter.tensor`` views) until the model is
about to run again, when their holder copies them out first. Staged early exit passes
hundreds of MB of features per 512² tile from stage to stage, and copying every one
out (``get_tensor``) and in again (``set_tensor``) cost as much as a stage's compute
(docs/export.md, "The runner").
"""
import ctypes
import dataclasses
import os
import weakref

import numpy as np
from ai_edge_litert import interpreter as litert

from rbqe_tf.litert.manifest import checked_path


class ModelError(Exception):
    """A model file that does not match its manifest entry (one-line message)."""


@dataclasses.dataclass
class Value:
    """A tensor's data; ``quant`` is ``(scale, zero_point)`` for quantized data, else None."""

    data: np.ndarray
    quant: tuple = None

    def float(self):
        if self.quant is None:
            return self.data.astype(np.float32, copy=False)
        scale, zero_point = self.quant
        return ((self.data.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _quant_tuple(entry):
    q = entry["quantization"]
    return None if q is None else (q["scale"], q["zero_point"])


def same_quantization(a, b):
    """Equal zero points and scales within 1e-5 relative (float32 calibration round-off)."""
    return (a is not None and b is not None and a[1] == b[1]
            and abs(a[0] - b[0]) <= 1e-5 * abs(b[0]))


def to_input(value, dtype, quant):
    """``value`` as the data of an input of ``dtype`` with ``quant`` (copy only if needed)."""
    if quant is None:
        return value.float()
    if value.data.dtype == dtype and same_quantization(value.quant, quant):
        return value.data
    scale, zero_point = quant
    info = np.iinfo(dtype)
    q = np.round(value.float() / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def make_interpreter(model_path, num_threads, xnnpack=True, delegates=(), content=None,
                     allocate=True):
    """An allocated interpreter of the file ``model_path`` or of the bytes ``content``;
    ``xnnpack=False`` disables the default CPU delegate; ``allocate=False`` leaves the
    tensors unallocated (enough to read the tensor details, without a 512² file's
    hundreds of MB of buffers)."""
    resolver = (litert.OpResolverType.AUTO if xnnpack
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    source = {"model_path": model_path} if content is None else {"model_content": content}
    interpreter = litert.Interpreter(**source, num_threads=num_threads,
                                     experimental_delegates=list(delegates) or None,
                                     experimental_op_resolver_type=resolver)
    if allocate:
        interpreter.allocate_tensors()
    return interpreter


def return_freed_memory():
    """glibc keeps freed heap pages (a closed interpreter's, a conversion's) for reuse;
    hands them back to the system, so that what a process holds is what it uses and the
    next file's footprint is measured, not hidden by reuse (no-op elsewhere)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class TFLiteModel:
    """An interpreter plus its manifest entry; ``run`` maps names → :class:`Value`."""

    def __init__(self, interpreter, entry, path):
        self.interpreter = interpreter
        self.inputs = self._bind(interpreter.get_input_details(), entry["inputs"], path)
        self.outputs = self._bind(interpreter.get_output_details(), entry["outputs"], path)
        self._holder = None  # weak reference to who holds views of the outputs (run_views)

    @staticmethod
    def _bind(details, entries, path):
        """name → (index, dtype, quant), after checking the file against the manifest."""
        by_tensor = {d["name"]: d for d in details}
        if sorted(by_tensor) != sorted(e["tensor"] for e in entries):
            raise ModelError(f"{path}: tensors {sorted(by_tensor)} do not match the manifest")
        bound = {}
        for e in entries:
            d = by_tensor[e["tensor"]]
            q = d["quantization"]
            quant = (float(q[0]), int(q[1])) if e["quantization"] else None
            if ([int(s) for s in d["shape"]] != e["shape"] or d["dtype"].__name__ != e["dtype"]
                    or (quant and not np.isclose(quant[0], e["quantization"]["scale"]))):
                raise ModelError(f"{path}: tensor {e['name']} differs from the manifest")
            bound[e["name"]] = (d["index"], d["dtype"], _quant_tuple(e))
        return bound

    def _invoke(self, feeds):
        holder = self._holder and self._holder()
        if holder is not None:
            holder.release(self)  # its views would be overwritten (and block invoke)
        self._holder = None
        for name, (index, dtype, quant) in self.inputs.items():
            self.interpreter.tensor(index)()[...] = to_input(feeds[name], dtype, quant)
        self.interpreter.invoke()

    def run(self, feeds):
        """``feeds``: name → Value for every input → dict name → Value of every output
        (copies, the caller's to keep)."""
        self._invoke(feeds)
        return {name: Value(self.interpreter.get_tensor(index), quant)
                for name, (index, _, quant) in self.outputs.items()}

    def run_views(self, feeds, holder):
        """As :meth:`run`, but the outputs are views of the interpreter's buffers.

        ``holder`` (anything with ``release(model)``, weakly referenced) must keep
        no other reference to them: before this model runs again, ``holder.release``
        is called to copy them out (LiteRT refuses to invoke while views exist).
        """
        self._invoke(feeds)
        self._holder = weakref.ref(holder)
        return {name: Value(self.interpreter.tensor(index)(), quant)
                for name, (index, _, quant) in self.outputs.items()}


def open_model(folder, manifest, name, num_threads, xnnpack=True, delegates=(), content=None):
    """:class:`TFLiteModel` for manifest entry ``name`` after its sha256 check, or of
    ``content``, its bytes read and checked before
    (:func:`rbqe_tf.litert.manifest.checked_bytes`)."""
    if content is None:
        path = checked_path(folder, manifest, name)
    else:
        path = os.path.join(folder, manifest["files"][name]["path"])
    return TFLiteModel(make_interpreter(path, num_threads, xnnpack, delegates, content),
                       manifest["files"][name], path)
