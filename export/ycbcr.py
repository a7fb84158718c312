"""BT.601 studio-range YCbCr in NumPy (the runner's copy of ``rbqe_tf.color``, kept
here so that the runner imports nothing from the TensorFlow side of the project)."""
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
