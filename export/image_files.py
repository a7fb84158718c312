"""Image files for the runner: OpenCV when importable, one-line errors, atomic writes.

The same behaviour as ``rbqe_tf.image_io`` (gray/RGB/RGBA, 8/16-bit, never replacing
a file without ``overwrite``), without importing the TensorFlow side of the project.
"""
import os
import tempfile

import numpy as np


class ImageError(Exception):
    """A user-facing problem with one image file (message names the file)."""


def opencv():
    """The cv2 module, or ImportError with the install command."""
    try:
        import cv2
    except ImportError:
        raise ImportError("reading and writing image files needs OpenCV: "
                          "pip install opencv-python-headless") from None
    return cv2


def read_image(path):
    """Decodes ``path`` to an RGB(A)/gray uint8 or uint16 array, or raises ImageError."""
    cv2 = opencv()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a readable image (corrupt, truncated or unknown format)")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: unsupported sample type {image.dtype} (need 8- or 16-bit)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise ImageError(f"{path}: unsupported channel count {image.shape[2]}")
    return image[:, :, [2, 1, 0, 3][:image.shape[2]]] if image.ndim == 3 else image


def write_image(path, image, overwrite=False):
    """Writes ``image`` (RGB(A)/gray) atomically; refuses an existing file unless ``overwrite``."""
    cv2 = opencv()
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ImageError(f"{path}: exists (use --overwrite to replace it)")
    if image.ndim == 3:
        image = image[:, :, [2, 1, 0, 3][:image.shape[2]]]
    ext = os.path.splitext(path)[1].lower() or ".png"
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(image))
    if not ok:
        raise ImageError(f"{path}: cannot encode image as {ext}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext,
                                   dir=os.path.dirname(os.path.abspath(path)))
    except OSError as e:
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encoded.tobytes())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process created path meanwhile
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise ImageError(f"{path}: exists (use --overwrite to replace it)") from None
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None
