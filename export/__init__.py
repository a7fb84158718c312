"""TFLite export of RBQE and a TensorFlow-free staged early-exit runner.

``python -m export.tflite`` writes per-exit, per-stage and quality-score models plus
``manifest.json``; ``python -m export.run`` enhances images with them using only
``ai-edge-litert`` and NumPy (OpenCV for image files). See docs/export.md.

This package imports nothing at import time, so the runner modules stay free of
TensorFlow.
"""
