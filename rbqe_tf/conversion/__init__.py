"""Keras model → TFLite export folder (TensorFlow): graphs per exit, stage and score,
conversion and quantization, flatbuffer rewrites, numeric checks (docs/export.md)."""
