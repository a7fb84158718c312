"""The edge commands, run from the repository root: ``python -m export.tflite`` (the
exporter, over :mod:`rbqe_tf.conversion`), ``python -m export.run`` (the TensorFlow-free
runner, over :mod:`rbqe_tf.litert`) and ``python -m export.benchmark`` (the on-device
harness, over :mod:`rbqe_tf.harness`). Not in the wheel: ``export`` is another
distribution's top-level name; the engines install with ``rbqe_tf``. See docs/export.md."""
