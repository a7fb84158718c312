"""Golden values for rbqe_tf.metrics against closed forms and independent loop implementations."""
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from rbqe_tf.metrics import blocking_effect_factor, psnr, psnr_b, ssim

CLASSIC5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "val" / "classic5"


def _random_pair(shape, seed=0, noise=12.0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a + rng.normal(0, noise, shape), 0, 255).round().astype(np.uint8)
    return a, b


def _ssim_loop(a, b):
    """Wang et al. 2004 written out: every 11×11 window fully inside, Gaussian σ 1.5."""
    k = np.array([math.exp(-((i - 5) ** 2) / (2 * 1.5 ** 2)) for i in range(11)])
    w = np.outer(k, k) / np.outer(k, k).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = a.astype(np.float64), b.astype(np.float64)
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            x, y = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            mx, my = (w * x).sum(), (w * y).sum()
            vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
            cxy = (w * (x - mx) * (y - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2)
                          / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def _bef_loop(y, block=8):
    """Yim & Bovik 2011 BEF with the paper's pair counts (sides multiples of the block)."""
    y = y.astype(np.float64)
    n_v, n_h = y.shape
    boundary = nonboundary = 0.0
    for r in range(n_v):
        for c in range(n_h - 1):
            d = (y[r, c] - y[r, c + 1]) ** 2
            if (c + 1) % block == 0:
                boundary += d
            else:
                nonboundary += d
    for r in range(n_v - 1):
        for c in range(n_h):
            d = (y[r, c] - y[r + 1, c]) ** 2
            if (r + 1) % block == 0:
                boundary += d
            else:
                nonboundary += d
    n_hb, n_vb = n_v * (n_h / block - 1), n_h * (n_v / block - 1)
    n_hbc, n_vbc = n_v * (n_h - 1) - n_hb, n_h * (n_v - 1) - n_vb
    d_b, d_bc = boundary / (n_hb + n_vb), nonboundary / (n_hbc + n_vbc)
    eta = math.log2(block) / math.log2(min(n_h, n_v)) if d_b > d_bc else 0.0
    return eta * (d_b - d_bc)


def _blocky(shape=(32, 40), seed=1):
    """A noisy image plus a per-8×8-block offset: strong steps at block boundaries."""
    rng = np.random.default_rng(seed)
    offsets = rng.integers(-40, 41, (shape[0] // 8, shape[1] // 8))
    base = 128 + rng.normal(0, 3, shape) + np.kron(offsets, np.ones((8, 8)))
    return np.clip(base, 0, 255).round().astype(np.uint8)


def test_psnr_closed_form():
    a = np.full((16, 24), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255 ** 2), abs=1e-12)
    assert psnr(a, a + 1) == pytest.approx(48.1308, abs=1e-4)
    b = a.copy()
    b[::2] += 2  # half the pixels off by 2 → MSE 2
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 2), abs=1e-12)
    assert psnr(a.astype(float), b.astype(np.int32)) == psnr(a, b)


def test_identical_images():
    a, _ = _random_pair((20, 30))
    assert psnr(a, a) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    flat = np.full((16, 16), 7, np.uint8)
    assert psnr_b(flat, flat) == float("inf")


def test_ssim_matches_direct_loop():
    a, b = _random_pair((19, 26), seed=3, noise=20.0)
    assert ssim(a, b) == pytest.approx(_ssim_loop(a, b), abs=1e-10)
    smooth = cv2.GaussianBlur(a, (0, 0), 2.0)
    assert ssim(smooth, a) == pytest.approx(_ssim_loop(smooth, a), abs=1e-10)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    assert 0 < ssim(a, b) < 1


def test_ssim_needs_a_full_window():
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((10, 30), np.uint8), np.zeros((10, 30), np.uint8))


def test_shape_checks():
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="single-channel"):
        psnr_b(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))


def test_psnr_b_equals_psnr_without_blockiness():
    ref, _ = _random_pair((32, 48), seed=4)
    flat = np.full_like(ref, 128)  # no differences at all → BEF 0
    ramp = np.add.outer(np.arange(32), np.arange(48)).astype(np.uint8)  # all steps equal
    for distorted in (flat, ramp):
        assert blocking_effect_factor(distorted) == 0
        assert psnr_b(ref, distorted) == pytest.approx(psnr(ref, distorted), abs=1e-12)


def test_bef_matches_direct_loop():
    blocky = _blocky()
    bef = blocking_effect_factor(blocky)
    assert bef > 0
    assert bef == pytest.approx(_bef_loop(blocky), rel=1e-12)
    assert blocking_effect_factor(blocky, 4) == pytest.approx(_bef_loop(blocky, 4), rel=1e-12)
    ref = np.full_like(blocky, 128)
    mse = np.mean((blocky.astype(float) - 128) ** 2)
    assert psnr_b(ref, blocky) == pytest.approx(10 * math.log10(255 ** 2 / (mse + bef)))


def test_psnr_b_below_psnr_on_blocky_jpeg():
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.normal(128, 60, (64, 64)), (0, 0), 3)
    image = np.clip(image, 0, 255).astype(np.uint8)
    jpeg = cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 10])[1], 0)
    assert psnr_b(image, jpeg) < psnr(image, jpeg)


# Classic5, OpenCV grayscale JPEG: PSNR from shared/data/README.md; SSIM and PSNR-B as
# published for the JPEG baseline (e.g. FBCNN, Jiang et al. ICCV 2021, Table 3).
CLASSIC5_JPEG = {10: (27.82, 0.760, 25.21), 20: (30.12, 0.834, 27.50),
                 30: (31.48, 0.867, 28.94), 40: (32.43, 0.885, 29.92),
                 50: (33.20, None, None)}


@pytest.mark.slow
@pytest.mark.skipif(not CLASSIC5.is_dir(), reason=f"shared data not found at {CLASSIC5}")
@pytest.mark.parametrize("quality", sorted(CLASSIC5_JPEG))
def test_classic5_jpeg_published_values(quality):
    scores = []
    for path in sorted(CLASSIC5.glob("*.png")):
        y = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        ok, data = cv2.imencode(".jpg", y, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        scores.append((psnr(y, decoded), ssim(y, decoded), psnr_b(y, decoded)))
    mean_psnr, mean_ssim, mean_psnr_b = np.mean(scores, axis=0)
    want_psnr, want_ssim, want_psnr_b = CLASSIC5_JPEG[quality]
    assert mean_psnr == pytest.approx(want_psnr, abs=0.01)
    if want_ssim is not None:
        assert mean_ssim == pytest.approx(want_ssim, abs=0.001)
        assert mean_psnr_b == pytest.approx(want_psnr_b, abs=0.01)
