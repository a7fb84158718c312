"""The TensorFlow-free LiteRT runtime: an export folder's manifest, its interpreters, the
staged early-exit runner and the .tflite flatbuffer reader (ai-edge-litert and NumPy;
docs/export.md). Imports nothing at import time."""
