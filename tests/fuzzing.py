"""Shared pieces of the fuzz tests (a helper module, not a test module): any JSON value,
one field of a JSON document replaced or removed, and the rule every image read obeys."""
import numpy as np
from hypothesis import strategies as st

from rbqe_tf.image_io import ImageError, read_image

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)
"""Any JSON value, NaN and ±inf included."""


def json_paths(value, path=()):
    """Every path in a JSON ``value`` (dict keys and list indices), containers included."""
    yield path
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from json_paths(item, path + (key,))


def edit_one_field(document, draw):
    """``document`` (edited in place) with one field, drawn by ``draw`` (hypothesis
    ``data.draw``), replaced by any JSON value or removed from its object."""
    path = draw(st.sampled_from(sorted((p for p in json_paths(document) if p), key=str)))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return document


def assert_image_or_one_line_error(path):
    """Reading ``path`` gives an 8/16-bit gray or colour array, or one ImageError line
    naming the file."""
    try:
        image = read_image(path)
    except ImageError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        assert image.dtype in (np.uint8, np.uint16) and image.ndim in (2, 3)
