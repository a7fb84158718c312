"""Fuzzing image files (model configs: tests/test_model_files.py, export manifests:
tests/test_manifest_validation.py, with the same rule). Every case ends in a correct
result or one one-line error — never a traceback, never longer than the per-case
deadline, never a large allocation (the module's cases together may raise the process's
peak memory by at most MEMORY_BOUND_MB)."""
import resource
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import assert_image_or_one_line_error
from rbqe_tf.image_io import write_image

FUZZ = dict(deadline=3000, derandomize=True, max_examples=200,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MEMORY_BOUND_MB = 1024


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def memory_bound():
    """Fails the module if its cases raised the peak memory by more than the bound."""
    before = _peak_mb()
    yield
    assert _peak_mb() - before < MEMORY_BOUND_MB


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    """One small valid file per readable format, as bytes."""
    folder = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    images = {".png": rng.integers(0, 65535, (9, 13, 3), np.uint16),
              ".jpg": rng.integers(0, 255, (16, 24, 3), np.uint8),
              ".webp": rng.integers(0, 255, (8, 8, 4), np.uint8),
              ".bmp": rng.integers(0, 255, (5, 7), np.uint8),
              ".ppm": rng.integers(0, 255, (6, 4, 3), np.uint8),
              ".tiff": rng.integers(0, 255, (7, 5), np.uint8)}
    files = {}
    for ext, image in images.items():
        write_image(folder / f"a{ext}", image)
        files[ext] = (folder / f"a{ext}").read_bytes()
    return files


def _mutated(data, draw):
    """A valid file with a few bytes overwritten, 16-/32-bit fields set to extreme values
    (dimension fields live near the start of every format), and maybe truncated."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, min(len(data), 64) - 4))
        kind = draw(st.sampled_from(["byte", "u16be", "u32be", "u16le", "u32le"]))
        value = draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFF, 20000, 0xFFFFFFFF, 0x40000000]))
        if kind == "byte":
            data[at] = value & 0xFF
        else:
            fmt = {"u16be": ">H", "u32be": ">I", "u16le": "<H", "u32le": "<I"}[kind]
            struct.pack_into(fmt, data, at, value & (0xFFFF if "16" in kind else 0xFFFFFFFF))
    if draw(st.booleans()):
        data = data[:draw(st.integers(1, len(data)))]
    return bytes(data)


@settings(**FUZZ)
@given(st.data(), st.sampled_from([".png", ".jpg", ".webp", ".bmp", ".ppm", ".tiff"]))
def test_mutated_image_files_read_or_fail_in_one_line(tmp_path_factory, valid_files,
                                                      memory_bound, data, ext):
    path = tmp_path_factory.mktemp("fuzz") / f"x{ext}"
    path.write_bytes(_mutated(valid_files[ext], data.draw))
    assert_image_or_one_line_error(path)
