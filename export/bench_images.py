"""The benchmark's mixed-quality image set: files from a folder, or generated scenes
JPEG-compressed at several quality factors (needs OpenCV either way)."""
import os

import numpy as np

from rbqe_tf.batch import IMAGE_EXTENSIONS
from rbqe_tf.image_io import read_image

GENERATED_QUALITIES = (10, 30, 50, 70, 90, None)  # None: the uncompressed scene


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
            ok, data = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, q])
            images.append((f"{name}_q{q}", cv2.imdecode(data, cv2.IMREAD_UNCHANGED)))
    return images


def folder_set(folder):
    """[(file name, image)] of the image files in ``folder`` (sorted); ImageError on a bad one."""
    _opencv()
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [(n, read_image(os.path.join(folder, n))) for n in names]
