"""rbqe_tf: resource-efficient blind quality enhancement of compressed images (RBQE).

Public API: :func:`build_model`, :func:`quality_score`, :func:`enhance`. They are
imported lazily, so ``import rbqe_tf.color`` and the dataset tools do not load
TensorFlow. ``rbqe_tf.enhance`` is the function; the command line is
``python -m rbqe_tf.enhance``.
"""
import importlib

_API = {
    "build_model": "rbqe_tf.model",
    "load_model": "rbqe_tf.model",
    "quality_score": "rbqe_tf.iqa",
    "enhance": "rbqe_tf.enhancer",
    "Enhancer": "rbqe_tf.enhancer",
}
__all__ = list(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'rbqe_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value
