"""Finding lossless source images (and the photos shipped in the package) and deriving
their ground-truth 8-bit Y plane.

Y convention: colour images (RGB, or RGBA with alpha dropped) give BT.601
studio-range luma ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, rounded
once to uint8 (``rbqe_tf.color``); single-channel images are used as they are
(full range, no conversion). 16-bit sources are brought to the 8-bit scale by
dividing by 257 (65535 → 255) before that single rounding.
"""
import os
from pathlib import Path

import numpy as np

from rbqe_tf.color import rgb_to_y_uint8, rgb_to_ycbcr
from rbqe_tf.image_io import read_image

LOSSLESS_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


def list_sources(src):
    """Lossless images under ``src`` (recursive), sorted by relative POSIX path."""
    src = Path(src)
    found = [p for p in src.rglob("*")
             if p.suffix.lower() in LOSSLESS_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    return sorted(found, key=lambda p: p.relative_to(src).as_posix())


def reference_images(folder=SAMPLES_DIR):
    """name → 8-bit Y plane of each PNG in ``folder`` (default: the CC0 photos shipped in
    the package), sorted by name."""
    planes = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".png"):
            image = read_image(os.path.join(folder, name))
            planes[name[:-4]] = image if image.ndim == 2 else rgb_to_y_uint8(image[..., :3])
    return planes


def stem_of(path, src):
    """Dataset key of a source: its path relative to ``src`` without suffix ('t91/t1')."""
    return Path(path).relative_to(src).with_suffix("").as_posix()


def to_y(image):
    """RGB(A)/gray uint8/uint16 array (as from ``read_image``) → uint8 Y [H, W]."""
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"need uint8 or uint16 samples, got {image.dtype}")
    if image.ndim == 2:
        if image.dtype == np.uint8:
            return image
        return np.round(image / 257.0).astype(np.uint8)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"need a gray, RGB or RGBA image, got shape {image.shape}")
    rgb = image[..., :3]
    if rgb.dtype == np.uint8:
        return rgb_to_y_uint8(rgb)
    y = rgb_to_ycbcr(rgb / 65535.0)[..., 0] * 255.0
    return np.clip(np.round(y), 0, 255).astype(np.uint8)
