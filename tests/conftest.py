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
