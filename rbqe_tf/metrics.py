"""Full-reference quality metrics on 8-bit Y images (NumPy).

Conventions, shared by the dataset manifest and the evaluator:

- Inputs are single-channel [H, W] arrays of 8-bit values (uint8, or any
  numeric dtype holding values in 0..255; floats in [0, 1] are *not*
  rescaled). Both images must have the same shape. No border is cropped.
- ``psnr``: ``10 log10(255² / MSE)``; identical images give ``float('inf')``.
- ``ssim``: Wang et al. 2004 with an 11×11 Gaussian window (σ = 1.5),
  K1 = 0.01, K2 = 0.03, L = 255, statistics over 'valid' window positions
  only (no padding), mean of the SSIM map. This is the official MATLAB
  ``ssim_index`` without its downsampling step, and BasicSR's ``calculate_ssim``
  on one channel. Images must be at least 11×11.
- ``psnr_b``: PSNR-B of Yim & Bovik 2011, ``10 log10(255² / (MSE + BEF))``,
  where the blocking-effect factor BEF is measured on the *distorted* image
  alone. With D_B the mean squared difference of horizontally and vertically
  neighbouring pixel pairs that straddle a block boundary (columns/rows
  B−1 | B, 2B−1 | 2B, …) and D_Bc the same over all other neighbouring pairs,
  ``BEF = log2(B) / log2(min(H, W)) · (D_B − D_Bc)`` if D_B > D_Bc, else 0.
  Pair counts are the actual numbers of pairs, which equal the paper's
  ``H·(W/B − 1)`` etc. when the sides are multiples of B (as in BasicSR's /
  KAIR's ``calculate_psnrb``, which evaluate the same formula with sides
  assumed to be multiples of B). Identical images with BEF = 0 give inf.
"""
import math

import cv2
import numpy as np

_PEAK = 255.0


def to_uint8(y):
    """Float Y in [0, 1] → uint8 (clip, ×255, round half to even): how every output is
    rounded before it is measured."""
    return np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)
_SSIM_C1 = (0.01 * _PEAK) ** 2
_SSIM_C2 = (0.03 * _PEAK) ** 2
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def _pair(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"need two single-channel images of the same shape, got "
                         f"{a.shape} and {b.shape}")
    return a, b


def _psnr_from_mse(mse):
    return float("inf") if mse == 0 else float(10.0 * math.log10(_PEAK ** 2 / mse))


def psnr(a, b):
    """PSNR (dB, peak 255) between two 8-bit Y images; inf if identical."""
    a, b = _pair(a, b)
    return _psnr_from_mse(np.mean((a - b) ** 2))


def ssim(a, b):
    """Mean SSIM (Gaussian 11×11, σ 1.5, 'valid' positions) of two 8-bit Y images."""
    a, b = _pair(a, b)
    if min(a.shape) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WINDOW}×{_SSIM_WINDOW}, "
                         f"got {a.shape[0]}×{a.shape[1]}")
    g = cv2.getGaussianKernel(_SSIM_WINDOW, _SSIM_SIGMA)
    window = g @ g.T
    r = _SSIM_WINDOW // 2

    def blur(x):  # centred window, then keep positions where it lies inside
        return cv2.filter2D(x, -1, window)[r:-r, r:-r]

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + _SSIM_C1) * (2 * cov + _SSIM_C2)
                / ((mu_a ** 2 + mu_b ** 2 + _SSIM_C1) * (var_a + var_b + _SSIM_C2)))
    return float(ssim_map.mean())


def blocking_effect_factor(image, block_size=8):
    """BEF of Yim & Bovik 2011 for one 8-bit Y image (see module docstring)."""
    y = np.asarray(image, np.float64)
    if y.ndim != 2:
        raise ValueError(f"need a single-channel image, got shape {y.shape}")
    h, w = y.shape
    if min(h, w) < 2:
        return 0.0
    dh = (y[:, 1:] - y[:, :-1]) ** 2  # pair (j, j+1) at column index j
    dv = (y[1:, :] - y[:-1, :]) ** 2
    on_col = np.arange(w - 1) % block_size == block_size - 1
    on_row = np.arange(h - 1) % block_size == block_size - 1
    n_b = h * on_col.sum() + w * on_row.sum()
    n_bc = h * (w - 1) + w * (h - 1) - n_b
    if n_b == 0 or n_bc == 0:
        return 0.0
    d_b = (dh[:, on_col].sum() + dv[on_row, :].sum()) / n_b
    d_bc = (dh[:, ~on_col].sum() + dv[~on_row, :].sum()) / n_bc
    if d_b <= d_bc:
        return 0.0
    return float(math.log2(block_size) / math.log2(min(h, w)) * (d_b - d_bc))


def psnr_b(reference, distorted, block_size=8):
    """PSNR-B (dB) of ``distorted`` against ``reference``: PSNR with MSE + BEF(distorted)."""
    ref, dist = _pair(reference, distorted)
    return _psnr_from_mse(np.mean((ref - dist) ** 2) + blocking_effect_factor(dist, block_size))
