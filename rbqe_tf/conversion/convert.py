"""TFLite conversion of one frozen graph in one quantization mode (builtin ops only)."""
import warnings

from rbqe_tf.litert.manifest import INT8_MODES, QUANT_MODES


def convert(graph, mode, representative=None):
    """Converts ``graph`` (:class:`rbqe_tf.conversion.graphs.Graph`) → .tflite bytes.

    ``mode``: ``fp32``; ``fp16`` (fp16 weights, fp32 compute on CPU); the full-integer
    modes quantize every op to int8 with int8 or float32 model inputs/outputs and need
    ``representative``, a callable returning an iterable of {input name: float32
    batch-1 array} — except for a ``graph.fake_quant`` (QAT) graph, whose ranges are
    its fake-quantization ops' (``representative`` is ignored).
    """
    if mode not in QUANT_MODES:
        raise ValueError(f"unknown quantization {mode!r} "
                         f"(expected one of {', '.join(QUANT_MODES)})")
    import tensorflow as tf  # here, so that importing the exporter's modules stays cheap
    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph.function], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode in INT8_MODES and graph.fake_quant:
        # TFLITE_BUILTINS_INT8 would demand a representative dataset (the converter's
        # check does not see the fake quantization); int8 coverage is checked on export.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "int8_full_int8_io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif mode in INT8_MODES:
        if representative is None:
            raise ValueError(f"{mode} needs a representative dataset")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if mode == "int8_full_int8_io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # the int8 calibrator still uses tf.lite.Interpreter
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return converter.convert()
