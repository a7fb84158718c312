"""Shared test settings and fixtures: quiet TensorFlow, the shared data folder.

Fixtures that several test modules need live here, so that no test module imports
another. Stateless helpers that are plain functions (``tests/fuzzing.py``) stay in a
helper module.
"""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` (training and validation images); skips the test if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model():
    """A seeded ``tiny`` RBQE whose exits differ visibly from their input and from each
    other: head k's pointwise kernel is scaled by 40·k (a fresh tiny network is nearly
    the identity, which would make every exit, and every exit's score, the same).
    Shared by the whole session: tests must not change its weights."""
    import keras
    from rbqe_tf.model import build_model

    keras.utils.set_random_seed(7)
    model = build_model("tiny")
    for k in range(1, 6):
        layer = model.get_layer(f"exit_{k}_pw")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 40 * k, bias])
    return model
