"""Reading and safely writing images; every problem becomes a one-line ImageError.

Images are NumPy arrays in RGB order: [H, W] (gray), [H, W, 3] (RGB) or
[H, W, 4] (RGBA), dtype uint8 or uint16. NumPy and OpenCV only (imported when a
file is read or written), so the TFLite runner uses this module too.
"""
import os
import tempfile

import numpy as np


def _default_file_mode():
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_file_mode()
"""The mode ``open()`` would give a new file; temp files from mkstemp are 0600."""


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


def quiet_opencv():
    """Silences OpenCV's own warnings (e.g. on a truncated PNG): the command lines report
    unreadable files themselves, in one line each. ImportError as :func:`opencv`."""
    cv2 = opencv()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


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
    if image.ndim == 3:
        if image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
        else:
            raise ImageError(f"{path}: unsupported channel count {image.shape[2]}")
    return image


LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")
DEFAULT_QUALITY = 95
"""JPEG/WebP quality when none is given (OpenCV's own default: JPEG 95, WebP lossless)."""


def encoding_problem(image, ext):
    """Why an image of this shape and type cannot be stored as ``ext`` without loss of
    samples or channels (None if it can): JPEG holds 8-bit gray or RGB, WebP and BMP
    8-bit samples, the PNM family no alpha (OpenCV would quietly drop or reduce them)."""
    ext = ext.lower()
    alpha = image.ndim == 3 and image.shape[2] == 4
    if image.dtype != np.uint8 and ext in (".jpg", ".jpeg", ".webp", ".bmp"):
        return f"{ext[1:]} holds 8-bit samples only, this image has {image.dtype.itemsize * 8}"
    if alpha and ext in (".jpg", ".jpeg", ".ppm", ".pgm", ".pnm"):
        return f"{ext[1:]} has no alpha channel"
    return None


def write_image(path, image, overwrite=False, quality=None):
    """Writes ``image`` (RGB(A)/gray, uint8/uint16) atomically: temp file, then rename.

    The format follows the extension (PNG without one); ``quality`` (1..100, default
    :data:`DEFAULT_QUALITY`) applies to JPEG and WebP. Refuses to replace an existing
    file unless ``overwrite``; a crash never leaves a half-written file at ``path``; the
    temp file's name is unique (``mkstemp``), so processes writing into one folder
    never share one.
    """
    cv2 = opencv()
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ImageError(f"{path}: exists (use --overwrite to replace it)")
    ext = os.path.splitext(path)[1].lower() or ".png"
    problem = encoding_problem(image, ext)
    if problem:
        raise ImageError(f"{path}: cannot write: {problem}")
    quality = DEFAULT_QUALITY if quality is None else int(quality)
    params = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    try:
        ok, encoded = cv2.imencode(ext, image, params)
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"{path}: cannot encode image as {ext}")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=directory)
    except OSError as e:
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encoded.tobytes())
        os.chmod(tmp, FILE_MODE)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process created path meanwhile
            os.unlink(tmp)
    except FileExistsError:
        raise ImageError(f"{path}: exists (use --overwrite to replace it)") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:  # also on Ctrl-C: no temp file is left behind
        if os.path.exists(tmp):
            os.unlink(tmp)
