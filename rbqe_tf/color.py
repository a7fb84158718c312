"""BT.601 studio-range YCbCr, the colour convention of the image-restoration literature.

For 8-bit R, G, B: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (and the
matching Cb, Cr). Float functions work on values in [0, 1] (Y in [16/255, 235/255]).
"""
import numpy as np

_RGB_TO_YCBCR = np.array(
    [[65.481, 128.553, 24.966],
     [-37.797, -74.203, 112.0],
     [112.0, -93.786, -18.214]]) / 255.0
_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb):
    """[..., 3] RGB in [0, 1] → [..., 3] YCbCr in [0, 1] (float64)."""
    return np.asarray(rgb, np.float64) @ _RGB_TO_YCBCR.T + _OFFSET


def ycbcr_to_rgb(ycbcr):
    """Inverse of :func:`rgb_to_ycbcr` (unclipped float64)."""
    return (np.asarray(ycbcr, np.float64) - _OFFSET) @ _YCBCR_TO_RGB.T


def rgb_to_y_uint8(rgb):
    """8-bit RGB [..., 3] → rounded 8-bit studio-range Y [...] (the literature's Y)."""
    y = rgb_to_ycbcr(np.asarray(rgb, np.float64) / 255.0)[..., 0] * 255.0
    return np.clip(np.round(y), 0, 255).astype(np.uint8)
