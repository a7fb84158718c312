"""The benchmark's mixed-quality image set: files from a folder, lossless photos
JPEG-compressed at the quality factors users meet (``mixed_set``), or generated scenes
(needs OpenCV in every case)."""
import os

import numpy as np

from rbqe_tf.batch import IMAGE_EXTENSIONS, expand_inputs
from rbqe_tf.color import rgb_to_y_uint8
from rbqe_tf.image_io import read_image

GENERATED_QUALITIES = (10, 30, 50, 70, 90, None)  # None: the uncompressed scene
# QF 10-95 and uncompressed: light inputs as well as heavy ones, so a saving reflects
# real routing (the gain decision leaves light ones at exit 0)
MIXED_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, None)


def _opencv():
    try:
        import cv2
    except ImportError:
        raise ImportError("the benchmark's image set needs OpenCV (to generate JPEG test "
                          "images or read --images): pip install opencv-python-headless") from None
    return cv2


def _scenes(size):
    """Three deterministic gray test scenes of ``size``×``size`` (uint8): shapes with text,
    smooth gradients with soft blobs, and fine texture, so exits and scores differ."""
    cv2 = _opencv()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    shapes = np.full((size, size), 90, np.uint8)
    for i in range(6):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(shapes, centre, int(size * (0.05 + 0.05 * i)), int(rng.integers(0, 256)), -1)
        cv2.rectangle(shapes, tuple(int(v) for v in rng.integers(0, size, 2)),
                      tuple(int(v) for v in rng.integers(0, size, 2)),
                      int(rng.integers(0, 256)), max(1, size // 128))
    for row in range(1, 4):
        cv2.putText(shapes, "RBQE early exit", (size // 16, row * size // 4),
                    cv2.FONT_HERSHEY_SIMPLEX, size / 400, 255, max(1, size // 256))
    smooth = 255 * (0.5 + 0.25 * np.sin(6 * xx) * np.cos(4 * yy))
    for cx, cy in rng.random((4, 2)):
        smooth += 60 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.01)
    texture = 128 + 60 * np.sin(40 * np.pi * xx + 8 * np.sin(6 * np.pi * yy))
    texture += rng.normal(0, 20, (size, size))
    return {"shapes": shapes,
            "smooth": np.clip(smooth, 0, 255).astype(np.uint8),
            "texture": np.clip(texture, 0, 255).astype(np.uint8)}


def _jpeg(cv2, y, quality):
    ok, data = cv2.imencode(".jpg", y, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def generated_set(size, qualities=GENERATED_QUALITIES):
    """[(name, image)]: each scene JPEG-compressed (OpenCV) at each quality factor (None:
    as it is), so the early-exit figures see light inputs as well as heavy ones."""
    cv2 = _opencv()
    images = []
    for name, scene in _scenes(size).items():
        for q in qualities:
            if q is None:
                images.append((f"{name}_none", scene))
                continue
            images.append((f"{name}_q{q}", _jpeg(cv2, scene, q)))
    return images


def mixed_set(folder, size, count, qualities=MIXED_QUALITIES):
    """[(name, image)]: the centre crop (at most ``size``×``size``) of the Y plane (BT.601)
    of ``count`` lossless images under ``folder`` (recursive, evenly spread over the
    sorted list, so every subfolder contributes), JPEG-coded by OpenCV at each quality
    (None: as it is). Use training images: the figures describe timing, and validation
    images are kept for quality figures."""
    cv2 = _opencv()
    files = expand_inputs([folder], recursive=True).files
    if not files:
        return []
    picks = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(count, len(files)))})
    images = []
    for i in picks:
        image = read_image(files[i].path)
        y = image if image.ndim == 2 else rgb_to_y_uint8(image[..., :3])
        if y.dtype != np.uint8:
            raise ValueError(f"{files[i].path}: the mixed set needs 8-bit images")
        top, left = (max(0, (n - size) // 2) for n in y.shape)
        y = np.ascontiguousarray(y[top:top + size, left:left + size])
        stem = files[i].name.replace(os.sep, "_")
        images += [(f"{stem}_{'none' if q is None else f'q{q}'}",
                    y if q is None else _jpeg(cv2, y, q)) for q in qualities]
    return images


def folder_set(folder):
    """[(file name, image)] of the image files in ``folder`` (sorted); ImageError on a bad one."""
    _opencv()
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [(n, read_image(os.path.join(folder, n))) for n in names]
