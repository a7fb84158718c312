"""rbqe_tf.iqa against an independent NumPy transcription of docs/method.md, "Quality
score", plus edge cases, batching, tracing and a TFLite (builtin ops) round trip."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from rbqe_tf import iqa
from rbqe_tf.color import rgb_to_y_uint8
from rbqe_tf.image_io import read_image

VAL_SETS = ("classic5", "set5", "set14")
CODECS = ("jpeg", "hevc")


# ---------------------------------------------------------------- NumPy reference
def ref_basis(b):
    """Step 3 (basis): float recurrence, rows divided by √ρ(p)."""
    u = np.arange(b, dtype=np.float64)
    t = np.zeros((b, b))
    t[0] = 1.0
    t[1] = (2 * u + 1 - b) / b
    for p in range(2, b):
        t[p] = ((2 * p - 1) * t[1] * t[p - 1]
                - (p - 1) * (1 - (p - 1) ** 2 / b ** 2) * t[p - 2]) / p
    rho = np.array([b * np.prod([1 - k * k / b ** 2 for k in range(1, p + 1)]) / (2 * p + 1)
                    for p in range(b)])
    return t / np.sqrt(rho)[:, None]


def ref_moments(patches, t):
    """Step 4 for patches [n, B, B]: normalise, remove the mean, T·P̃·Tᵀ."""
    p = patches / np.sqrt((patches ** 2).sum((1, 2), keepdims=True))
    p = p - p.mean((1, 2), keepdims=True)
    return t @ p @ t.T


def ref_blur(patches):
    """3×3 Gaussian (σ = 5, normalised) on each patch alone, zero padding, same size."""
    g = np.array([[np.exp(-(i * i + j * j) / (2 * 5.0 ** 2)) for j in (-1, 0, 1)]
                  for i in (-1, 0, 1)])
    g /= g.sum()
    padded = np.pad(patches, ((0, 0), (1, 1), (1, 1)))
    b = patches.shape[1]
    out = np.zeros_like(patches)
    for di in range(3):
        for dj in range(3):
            out += g[di, dj] * padded[:, di:di + b, dj:dj + b]
    return out


def ref_score(y, codec, counts=None):
    """Q of one [H, W] image in [0, 1] (float64), one row of patches at a time."""
    b = {"jpeg": 8, "hevc": 4}[codec]
    t = ref_basis(b)
    # 8 bits as quality_score sees them: float32 product, np.round rounds half to even.
    x = np.round(np.clip(np.asarray(y, np.float32), 0, 1) * np.float32(255)) / 255.0
    smooth, textured = [], []
    for i in range(x.shape[0] // b - 1):
        r = i * b + b // 2
        patches = np.array([x[r:r + b, j * b + b // 2:(j + 1) * b + b // 2]
                            for j in range(x.shape[1] // b - 1)]).reshape(-1, b, b)
        zero = ~patches.any((1, 2))
        smooth += [1.0] * int(zero.sum())  # an all-zero patch is smooth with score 1
        m = ref_moments(patches[~zero], t)
        ssm = (m ** 2).sum((1, 2)) - m[:, 0, 0] ** 2
        tex = ssm > 0.004
        mt, mb = m[tex], ref_moments(ref_blur(patches[~zero][tex]), t)
        textured += list(1 - np.mean((2 * mt * mb + 1e-5) / (mt ** 2 + mb ** 2 + 1e-5), (1, 2)))
        ms = m[~tex]
        d = np.abs(ms).sum((1, 2)) - np.abs(ms[:, 0, 0]) + 1e-5
        q_v = np.minimum(np.abs(ms[:, b - 1, :]).sum(1) / d, 0.05)
        q_h = np.minimum(np.abs(ms[:, :, b - 1]).sum(1) / d, 0.05)
        smooth += list(np.log(1 - (q_v + q_h) / 2) / np.log(1 - 0.05))
    if counts is not None:
        counts["smooth"] += len(smooth)
        counts["textured"] += len(textured)
    s_blk = np.mean(smooth) if smooth else 1.0
    s_blur = np.mean(textured) if textured else 1.0
    return s_blk ** 0.9 * s_blur ** 0.1


# ---------------------------------------------------------------- data
def jpeg(gray, quality):
    ok, data = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def load_y(path):
    image = read_image(path)
    return rgb_to_y_uint8(image[..., :3]) if image.ndim == 3 else image


def centre_crop(image, size):
    r, c = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[r:r + size, c:c + size]


def score(gray_uint8, codec):
    y = gray_uint8.astype(np.float32)[None, :, :, None] / 255
    return float(iqa.quality_score(y, codec)[0])


@pytest.fixture(scope="module")
def val_images(shared_data):
    paths = sorted(p for s in VAL_SETS for p in (shared_data / "val" / s).glob("*.png"))
    if not paths:
        pytest.skip(f"no validation images under {shared_data / 'val'}")
    return {f"{p.parent.name}/{p.stem}": load_y(p) for p in paths}


@pytest.fixture(scope="module")
def reference_cases(val_images):
    """128×128 centre crops of every image plus a full 512×512 Classic5 image, each
    original and JPEG QF 50 / QF 10 (compressed after cropping)."""
    grays = [centre_crop(g, 128) for g in val_images.values()]
    grays.append(val_images["classic5/barbara"])
    return [v for g in grays for v in (g, jpeg(g, 50), jpeg(g, 10))]


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("b", [4, 8])
def test_basis_is_orthonormal_and_matches_recurrence(b):
    t = iqa.tchebichef_basis(b)
    assert t.dtype == np.float64 and t.shape == (b, b)
    np.testing.assert_allclose(t @ t.T, np.eye(b), atol=1e-12)
    np.testing.assert_allclose(t, ref_basis(b), atol=1e-12)


def test_basis_golden_row():
    np.testing.assert_allclose(iqa.tchebichef_basis(4)[1], [-0.6708, -0.2236, 0.2236, 0.6708],
                               atol=1e-4)


def test_default_thresholds():
    assert iqa.DEFAULT_THRESHOLDS == {"jpeg": 0.79, "hevc": 0.89}


@pytest.mark.parametrize("codec", CODECS)
def test_matches_numpy_reference(codec, reference_cases):
    traced = tf.function(lambda y: iqa.quality_score(y, codec),
                         input_signature=[tf.TensorSpec([1, None, None, 1], tf.float32)],
                         autograph=False)
    counts = {"smooth": 0, "textured": 0}
    errors = []
    for version in reference_cases:
        expected = ref_score(version / 255.0, codec, counts)
        y = version.astype(np.float32)[None, :, :, None] / 255
        errors += [abs(float(iqa.quality_score(y, codec)[0]) - expected),
                   abs(float(traced(y)[0]) - expected)]
    assert max(errors) <= 1e-5, f"max |TF − NumPy| = {max(errors):.2e}"
    assert counts["smooth"] > 1000 and counts["textured"] > 1000, counts


def test_quality_falls_with_jpeg_quality(val_images):
    # QF 50 does not always score below the original (barbara: 0.911 vs 0.901).
    for name in [n for n in val_images if n.startswith("classic5/")]:
        gray = val_images[name]
        original, q50, q10 = (score(g, "jpeg") for g in (gray, jpeg(gray, 50), jpeg(gray, 10)))
        assert q10 < q50 and q10 < original, (name, q10, q50, original)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("image, expected", [
    (np.full((64, 64), 0.5), 0.0),  # every patch flat: blockiness 0
    (np.zeros((64, 64)), 1.0),  # all-zero patches score 1
    (np.ones((64, 64)), 0.0),
    (np.zeros((1, 1)), 1.0),  # no patches
    (np.full((7, 7), 0.3), 1.0),
    (np.random.default_rng(0).random((64, 48)), None),
])
def test_edge_cases(codec, image, expected):
    q = iqa.quality_score(image[None, :, :, None], codec).numpy()
    assert q.shape == (1,) and q.dtype == np.float32
    assert np.isfinite(q).all() and 0.0 <= q[0] <= 1.0
    assert q[0] == pytest.approx(ref_score(image, codec), abs=1e-5)
    if expected is not None:
        assert q[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("codec", CODECS)
def test_batch_equals_one_by_one(codec):
    rng = np.random.default_rng(1)
    smooth = cv2.GaussianBlur(rng.random((3, 96, 80)).astype(np.float32).transpose(1, 2, 0),
                              (0, 0), 3).transpose(2, 0, 1)
    batch = np.concatenate([smooth, rng.random((1, 96, 80)), np.zeros((1, 96, 80))])[..., None]
    together = iqa.quality_score(batch, codec).numpy()
    alone = np.concatenate([iqa.quality_score(image[None], codec).numpy() for image in batch])
    np.testing.assert_allclose(together, alone, atol=1e-7)


def test_patch_maps_average_to_quality_score():
    rng = np.random.default_rng(5)
    y = np.concatenate([cv2.GaussianBlur(rng.random((64, 72)), (0, 0), 2)[None],
                        rng.random((1, 64, 72))])[..., None]
    maps = iqa.patch_maps(y, "jpeg").numpy()
    assert maps.shape == (2, 7, 8, 3)
    blockiness, textured, blur = maps[..., 0], maps[..., 1], maps[..., 2]
    assert set(np.unique(textured)) == {0.0, 1.0}
    expected = []
    for s, t, u in zip(blockiness, textured, blur):
        s_blk = s[t == 0].mean() if (t == 0).any() else 1.0
        s_blur = u[t == 1].mean() if (t == 1).any() else 1.0
        expected.append(s_blk ** 0.9 * s_blur ** 0.1)
    np.testing.assert_allclose(iqa.quality_score(y, "jpeg").numpy(), expected, atol=1e-6)


def test_input_dtypes_and_rounding():
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 256, (1, 40, 40, 1))
    expected = iqa.quality_score(levels / 255.0, "hevc").numpy()
    for y in (levels.astype(np.float32) / 255, tf.constant(levels / 255.0, tf.float16),
              (levels + rng.uniform(-0.45, 0.45, levels.shape)) / 255):
        np.testing.assert_array_equal(iqa.quality_score(y, "hevc").numpy(), expected)


def test_rounds_half_to_even_like_numpy():
    k = np.arange(255, dtype=np.float32)
    y = (k + np.float32(0.5)) / np.float32(255)
    ties = k[y * np.float32(255) == k + np.float32(0.5)]  # y·255 is exactly k + 0.5
    assert (ties % 2 == 0).any()  # where half-up rounding would differ
    idx = np.random.default_rng(4).integers(0, len(ties), (1, 32, 32, 1))
    levels = np.round(ties[idx] + np.float32(0.5))  # NumPy: half to even
    np.testing.assert_array_equal(iqa.quality_score(y[ties.astype(int)][idx], "hevc").numpy(),
                                  iqa.quality_score(levels / 255.0, "hevc").numpy())


def test_traceable_with_dynamic_shape():
    fn = tf.function(lambda y: iqa.quality_score(y, "jpeg"),
                     input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)],
                     autograph=False)
    for shape in [(2, 70, 45, 1), (1, 5, 30, 1)]:
        y = np.random.default_rng(3).random(shape).astype(np.float32)
        np.testing.assert_allclose(fn(y).numpy(), iqa.quality_score(y, "jpeg").numpy(),
                                   atol=1e-7)


def test_rejects_unknown_codec_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown codec"):
        iqa.quality_score(np.zeros((1, 16, 16, 1)), "avc")
    for shape in [(16, 16), (1, 16, 16, 3)]:
        with pytest.raises(ValueError, match=r"\[N, H, W, 1\]"):
            iqa.quality_score(np.zeros(shape), "jpeg")


# Fixed-kernel convolutions, pooling, masks and element-wise ops (docs/method.md,
# "Quality score"); no GATHER,
# EXPAND_DIMS/SQUEEZE, SELECT, loops or custom/flex ops.
GPU_FRIENDLY_OPS = {"STRIDED_SLICE", "ROUND", "MINIMUM", "MAXIMUM", "RELU", "MUL", "ADD", "SUB",
                    "DIV", "CONV_2D", "RSQRT", "SUM", "MEAN", "ABS",
                    "LOG", "POW", "RESHAPE"}


class _ScoreModule(tf.Module):
    def __init__(self, codec):
        super().__init__()
        self.score = tf.function(lambda y: iqa.quality_score(y, codec),
                                 input_signature=[tf.TensorSpec([1, 256, 256, 1], tf.float32)],
                                 autograph=False)


@pytest.mark.parametrize("codec", CODECS)
def test_tflite_builtin_ops_and_parity(codec, val_images):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    module = _ScoreModule(codec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.score.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = converter.convert()
    no_delegate = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    plain = Interpreter(model_content=model, num_threads=2,
                        experimental_op_resolver_type=no_delegate)
    xnnpack = Interpreter(model_content=model, num_threads=2)
    ops = {op["op_name"] for op in plain._get_ops_details()}
    assert ops <= GPU_FRIENDLY_OPS, ops - GPU_FRIENDLY_OPS

    crop = centre_crop(val_images["classic5/lena"], 256)
    for interpreter in (plain, xnnpack):
        interpreter.allocate_tensors()
        for gray in (crop, jpeg(crop, 10)):
            y = gray.astype(np.float32)[None, :, :, None] / 255
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], y)
            interpreter.invoke()
            lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            assert lite.shape == (1,)
            np.testing.assert_allclose(lite, module.score(y).numpy(), atol=1e-6)
