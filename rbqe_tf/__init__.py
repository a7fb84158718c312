"""rbqe_tf: resource-efficient blind quality enhancement of compressed images (RBQE).

Public API: :func:`build_model`, :func:`quality_score`, :func:`enhance`.
"""
from rbqe_tf.model import build_model

__all__ = ["build_model"]
