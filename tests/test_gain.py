"""Exit 0 and the gain decision (rbqe_tf.gain): features, rule, calibration, Enhancer."""
import math

import cv2
import numpy as np
import pytest

from rbqe_tf import gain
from rbqe_tf.calibration import calibrate_gain, resolve_gain_rule, save_threshold


def _loop_features(y):
    """Independent reference: per-block DCT by explicit cosine sums, statistics by loops."""
    y = np.asarray(y, np.float64)
    h, w = y.shape[0] // 8, y.shape[1] // 8
    n = np.arange(8)
    basis = np.array([[(math.sqrt(1 / 8) if u == 0 else math.sqrt(2 / 8))
                       * math.cos((2 * x + 1) * u * math.pi / 16) for x in n] for u in n])
    bands = [0, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 5]  # by u + v
    energy, zero = np.zeros(64), np.zeros(64)
    on, total = np.zeros((6, 8)), np.zeros((6, 8))
    for i in range(h):
        for j in range(w):
            block = y[8 * i:8 * i + 8, 8 * j:8 * j + 8]
            for u in range(8):
                for v in range(8):
                    c = sum(basis[u, a] * basis[v, b] * block[a, b]
                            for a in range(8) for b in range(8))
                    energy[8 * u + v] += math.log1p(abs(c))
                    zero[8 * u + v] += math.exp(-c * c)
                    for k, q in enumerate(gain.LATTICE_STEPS):
                        weight = 1 - math.exp(-(c / q) ** 2)
                        on[bands[u + v], k] += weight * math.cos(2 * math.pi * c / q)
                        total[bands[u + v], k] += weight
    blocks = h * w
    return np.concatenate([energy / blocks, zero / blocks, (on / total).ravel()])


def test_features_match_a_loop_reference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 256, (20, 27)).astype(np.uint8)  # 2×3 whole blocks, a ragged edge
    np.testing.assert_allclose(gain.features(y), _loop_features(y[:16, :24]), atol=2e-5)
    assert gain.features(y[:7]) is None  # no whole block


def _blockwise_features(grey, stride=1):
    """Independent reference for the vectorised features: a plain loop of D @ B @ D.T over
    every ``stride``-th block row and column of float64 ``grey``, then the statistics as
    gain.py states them, with the same float32 steps (cos and exp at steps 24 and 16 cast
    to float32, angle doubling and fourth powers in float32, float32 products, float64
    sums), so the two agree far below the float32 ones' error."""
    k = np.arange(8)
    d = math.sqrt(2 / 8) * np.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16)
    d[0] /= math.sqrt(2)
    c = np.array([d @ grey[i:i + 8, j:j + 8] @ d.T
                  for i in range(0, grey.shape[0] - 7, 8 * stride)
                  for j in range(0, grey.shape[1] - 7, 8 * stride)]).reshape(-1, 64)
    band = np.digitize(np.add.outer(k, k).ravel(), [1, 2, 4, 7, 10])
    on, total = np.zeros((6, 8)), np.zeros((6, 8))
    for base in (24.0, 16.0):
        turns = c / base
        cos = np.cos(2 * math.pi * (turns - np.round(turns))).astype(np.float32)
        gauss = np.exp(-turns * turns).astype(np.float32)
        for power in range(4):
            if power:
                cos = 2 * cos * cos - 1
                gauss = np.square(np.square(gauss))
            weight = 1 - gauss
            step = gain.LATTICE_STEPS.index(base / 2 ** power)
            on[:, step] = np.bincount(band, (weight * cos).astype(np.float64).sum(0), 6)
            total[:, step] = np.bincount(band, weight.astype(np.float64).sum(0), 6)
    zero = np.square(np.square(gauss)).astype(np.float64)  # base 16's q = 2 → exp(−c²)
    return np.concatenate([np.log1p(np.abs(c)).mean(0), zero.mean(0),
                           (on / np.maximum(total, 1e-6)).ravel()])


@pytest.mark.parametrize("shape, stride", [
    ((8, 8), 1), ((23, 17), 1), ((139, 161), 1),  # 17 × 20 blocks: two windows, two chunks
    ((520, 530), 2),  # 65 × 66 blocks > MAX_BLOCKS: every second block row and column
])
def test_vectorised_features_match_a_blockwise_loop(shape, stride):
    rng = np.random.default_rng(sum(shape))
    y = rng.integers(0, 256, shape).astype(np.uint8)
    y[:64, :64] = cv2.GaussianBlur(y[:64, :64], (0, 0), 3)  # smooth blocks: near-zero ACs
    y[-8:, -16:] = 77  # flat blocks
    h, w = shape[0] // 8 * 8, shape[1] // 8 * 8
    grey = y[:h, :w].astype(np.float64)
    np.testing.assert_allclose(gain.features(y), _blockwise_features(grey, stride),
                               rtol=1e-7, atol=1e-12)
    studio = (16 + y * (219 / 255)) / 255  # float studio-range Y of a colour image
    np.testing.assert_allclose(
        gain.features(studio, colour=True),
        _blockwise_features((studio[:h, :w] * 255.0 - 16.0) * (255.0 / 219.0), stride),
        rtol=1e-7, atol=1e-12)


def test_polynomial_cos_is_numpy_cos_to_float64_rounding():
    a = np.concatenate([np.linspace(-math.pi, math.pi, 100_001), [0.0, 1e-300, math.pi / 2]])
    np.testing.assert_allclose(gain._cos(a.copy()), np.cos(a), rtol=0, atol=5e-16)


def test_decide_on_sampled_pixels_equals_luma_of_the_whole_image():
    """decide converts only the blocks the features read (a large photo's luma is most of
    its cost); luma is per pixel, so the features are the same numbers."""
    from rbqe_tf import color
    rng = np.random.default_rng(9)
    predictor = _predictor([0.2, 0.1, 0.0, 0.0, 0.0])
    rule = {"margin": 0.1, "tolerance": 0.0}
    for image in (rng.integers(0, 256, (530, 525, 3), dtype=np.uint8),  # sampled
                  rng.integers(0, 65536, (45, 70, 4), dtype=np.uint16),
                  rng.integers(0, 256, (21, 30, 1), dtype=np.uint8)):
        colour = image.shape[2] != 1
        whole = gain.features(color.luma(image), colour)
        assert np.array_equal(gain._features(gain._sampled_luma(image), colour), whole)
        assert gain.decide(predictor, rule, image) == (1, [0.2, 0.1, 0.0, 0.0, 0.0])
    assert gain.decide(predictor, rule, np.zeros((7, 900, 3), np.uint8)) == (0, [])
    outside = np.full((600, 600), 0.5)
    outside[8, 8] = np.nan  # block (1, 1): not among the sampled ones
    with pytest.raises(ValueError, match="NaN"):
        gain.decide(predictor, rule, outside)
    with pytest.raises(ValueError, match=r"\(20, 20, 2\)"):
        gain.decide(predictor, rule, np.zeros((20, 20, 2), np.uint8))


def test_lattice_features_see_jpeg_quantization():
    """Coefficients of a QF 50 JPEG sit on its lattices; an uncompressed image's do not
    (in the low bands: high bands of only near-zero coefficients score ~1 in both)."""
    rng = np.random.default_rng(1)
    y = cv2.GaussianBlur(rng.integers(0, 256, (128, 128)).astype(np.uint8), (0, 0), 1.5)
    _, data = cv2.imencode(".jpg", y, [cv2.IMWRITE_JPEG_QUALITY, 50])
    coded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    low_bands = slice(2 * 64, 2 * 64 + 3 * len(gain.LATTICE_STEPS))
    assert gain.features(coded)[low_bands].max() > gain.features(y)[low_bands].max() + 0.5


def test_colour_luma_maps_back_to_the_coded_range():
    y = np.random.default_rng(2).integers(0, 256, (16, 16)).astype(np.uint8)
    studio = (16 + y.astype(np.float64) * 219 / 255) / 255  # studio-range Y of full-range y
    np.testing.assert_allclose(gain.features(studio, colour=True), gain.features(y), atol=1e-6)


def test_decide_runs_blas_on_one_thread_and_restores_the_count():
    """Both the Keras Enhancer and the runner decide through decide; OpenBLAS's thread
    hand-off costs more than the decision's small products on a busy CPU."""
    if gain._OPENBLAS is None:
        pytest.skip("NumPy here does not bundle OpenBLAS")
    get, set_ = gain._OPENBLAS
    before = get()
    set_(2)
    seen = []
    predictor = _predictor([0.3, 0.2, 0.0, 0.0, 0.0])
    predict = predictor.predict
    predictor.predict = lambda f: (seen.append(get()), predict(f))[1]
    image = np.random.default_rng(4).integers(0, 256, (300, 260), dtype=np.uint8)
    rule = {"margin": 0.1, "tolerance": 0.0}
    try:
        assert gain.decide(predictor, rule, image) == gain.decide(
            predictor, rule, image, one_thread=False)
        assert seen == [1, 2] and get() == 2
    finally:
        set_(before)


def test_rule_by_hand():
    gains = np.array([[-0.5, -0.2, -0.1, -0.3, -0.4],   # nothing gains: exit 0
                      [0.50, 0.90, 1.00, 0.98, 0.70],   # 0.98 ≥ 1.0 − 0.05 but exit 3 first
                      [0.05, 0.08, 0.09, 0.02, 0.01]])  # best 0.09 < margin 0.1: exit 0
    np.testing.assert_array_equal(gain.choose_exits(gains, 0.1, 0.05), [0, 3, 0])
    np.testing.assert_array_equal(gain.choose_exits(gains, 0.0, 0.2), [0, 2, 1])
    # the gate head decides exit 0 alone; the gain head still picks the exit
    np.testing.assert_array_equal(gain.choose_exits(gains, 0.1, 0.05, gate=[0.3, 0.05, 0.2]),
                                  [3, 0, 1])


def test_two_heads_round_trip_and_one_head_files_use_it_for_both(tmp_path):
    one = _predictor([0.2, 0.1, 0.0, 0.0, 0.0])
    y = np.random.default_rng(1).random((16, 16))  # textured: flat images are gated shut
    np.testing.assert_allclose(one(y)[0], [0.2, 0.1, 0.0, 0.0, 0.0])
    assert one(y)[1] == 0.2
    two = gain.GainPredictor({**_weights([0.2, 0.1, 0, 0, 0]),
                              **{"gate_" + k: v for k, v in _weights([0, 0, -1, 0, 0.05]).items()
                                 if k[0] in "wb"}})
    two.save(tmp_path / "p.npz")
    back = gain.read_predictor(tmp_path / "p.npz")
    np.testing.assert_allclose(back(y)[0], [0.2, 0.1, 0.0, 0.0, 0.0])
    assert back(y)[1] == 0.05
    assert gain.decide(back, {"margin": 0.1, "tolerance": 0.0}, y) == (0, [0.2, 0.1, 0.0, 0.0, 0.0])


def _weights(bias, features=gain.NUM_FEATURES):
    """One head whose output is ``bias`` whatever the image (zero weights)."""
    return {"mean": np.zeros(features), "scale": np.ones(features),
            "w0": np.zeros((features, 4)), "b0": np.zeros(4),
            "w1": np.zeros((4, len(bias))), "b1": np.array(bias, float)}


def _predictor(bias, features=gain.NUM_FEATURES):
    """A one-head predictor whose output is ``bias`` whatever the image."""
    return gain.GainPredictor(_weights(bias, features))


def test_predictor_round_trip_and_bad_files(tmp_path):
    weights = tmp_path / "m.keras"
    assert gain.load_predictor(weights) is None
    p = _predictor([0.1, 0.2, 0.3, 0.4, 0.5])
    p.save(gain.predictor_path(weights))
    loaded = gain.load_predictor(weights)
    np.testing.assert_allclose(loaded(np.zeros((16, 16), np.uint8))[0], [0.1, 0.2, 0.3, 0.4, 0.5])
    _predictor([0.0] * 5, features=3).save(gain.predictor_path(weights))
    with pytest.raises(ValueError, match="m.gain.npz: not a gain predictor"):
        gain.load_predictor(weights)


def test_calibration_keeps_light_inputs_safe():
    # Rows 0-1 light (gains at every exit would lose), rows 2-3 heavy.
    predicted = np.array([[0.30, 0.2, 0.1, 0.0, 0.0], [0.05, 0.0, 0.0, 0.0, 0.0],
                          [0.50, 0.9, 1.0, 1.1, 1.2], [0.40, 0.6, 0.7, 0.7, 0.7]])
    exit_psnr = np.array([[39.0] * 5, [44.0] * 5, [30.5, 30.9, 31.0, 31.1, 31.2],
                          [32.4, 32.6, 32.7, 32.7, 32.7]])
    input_psnr = np.array([40.0, 45.0, 30.0, 32.0])
    gmacs = np.tile([1.0, 2.0, 3.0, 4.0, 5.0], (4, 1))
    light = np.array([True, True, False, False])
    rule = calibrate_gain(predicted, exit_psnr, input_psnr, gmacs, np.zeros(4), light)
    # Row 0 predicts +0.3 but loses 1 dB: the margin must exceed 0.3; rows 2 and 3 still
    # gain (best predicted 1.2 and 0.7), at exit 5 and, within the tolerance, exit 3.
    assert rule["margin"] > 0.3 and rule["worst_light_delta_psnr"] == 0.0
    assert rule["mean_delta_psnr"] == pytest.approx((1.2 + 0.7) / 4)


def test_gain_rule_is_read_from_the_thresholds_file(tmp_path):
    weights = tmp_path / "m.keras"
    assert resolve_gain_rule("jpeg", weights)[1] == "default"
    save_threshold(weights, "jpeg", {"threshold": 0.5, "gain": {"margin": 0.3, "tolerance": 0.02}})
    assert resolve_gain_rule("jpeg", weights) == ({"margin": 0.3, "tolerance": 0.02}, "calibrated")


@pytest.fixture(scope="module")
def tiny():
    from rbqe_tf.model import build_model
    return build_model("tiny")


@pytest.mark.parametrize("image", [
    np.random.default_rng(3).integers(0, 256, (40, 56, 3)).astype(np.uint8),
    np.random.default_rng(4).integers(0, 65536, (33, 17, 4)).astype(np.uint16),
    np.random.default_rng(5).random((24, 24)).astype(np.float32)])
def test_exit_0_returns_the_image_unchanged(tiny, image):
    from rbqe_tf.enhancer import Enhancer
    enhancer = Enhancer(tiny, predictor=_predictor([-1.0] * 5))
    result = enhancer(image)
    assert result.exit == 0 and result.gains == [-1.0] * 5 and result.scores == []
    np.testing.assert_array_equal(result.image, image)
    assert result.image is not image and result.image.dtype == image.dtype


def test_gain_decision_runs_the_chosen_exit(tiny):
    from rbqe_tf.enhancer import Enhancer
    image = np.random.default_rng(6).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    chosen = Enhancer(tiny, predictor=_predictor([0.2, 0.9, 0.5, 0.95, 0.1]),
                      gain_rule={"margin": 0.1, "tolerance": 0.1})(image)
    forced = Enhancer(tiny)(image, exit=2)
    assert chosen.exit == 2
    np.testing.assert_array_equal(chosen.image, forced.image)


def test_bgr_arrays_give_the_rgb_result_in_bgr_order(tiny):
    from rbqe_tf.enhancer import Enhancer
    rgb = np.random.default_rng(7).integers(0, 256, (32, 40, 3)).astype(np.uint8)
    enhancer = Enhancer(tiny, threshold=1.01)
    as_rgb = enhancer(rgb).image
    as_bgr = enhancer(np.ascontiguousarray(rgb[..., ::-1]), channel_order="bgr").image
    np.testing.assert_array_equal(as_bgr[..., ::-1], as_rgb)
    with pytest.raises(ValueError, match="channel_order"):
        enhancer(rgb, channel_order="grb")


def _record(name, level, input_psnr, exit_psnr, predicted, derived=False):
    from rbqe_tf.evaluation import Record
    e = np.array(exit_psnr, float)
    return Record(name, level, input_psnr, 0.9, input_psnr, 0.5, e, e * 0 + 0.9, e, e * 0 + 0.5,
                  np.ones(5), np.ones(4), np.arange(1.0, 6.0), np.array(predicted, float), 0.01,
                  derived)


def test_gain_figures_by_hand():
    from rbqe_tf.evaluation import gain_figures
    records = [_record("a", 10, 30.0, [31.0, 31.2, 31.1, 31.0, 30.9], [1, 2, 1.5, 1, 1]),   # exit 2
               _record("b", 90, 45.0, [44.0] * 5, [-1] * 5),                                # exit 0
               _record("c", 90, 45.0, [46.0] * 5, [0.5, 0, 0, 0, 0], derived=True)]        # exit 1
    g = gain_figures(records, {"margin": 0.1, "tolerance": 0.0})
    assert g["exit_histogram"] == [1, 1, 1, 0, 0, 0]
    assert g["delta_psnr"] == pytest.approx((1.2 + 0 + 1.0) / 3)
    assert g["mean_gmacs"] == pytest.approx((3 + 0 + 1) / 3 + 0.01)  # stages 1..k: 1, 3, 6, …
    assert g["oracle_delta_psnr"] == pytest.approx((1.2 + 0 + 1.0) / 3)
    assert g["num_measurable"] == 2  # c: a light input of a JPEG-derived ground truth
    assert g["measurable_delta_psnr"] == pytest.approx(0.6)


def test_jpeg_derived_ground_truths_are_recognised():
    rng = np.random.default_rng(8)
    y = cv2.GaussianBlur(rng.integers(0, 256, (96, 96)).astype(np.uint8), (0, 0), 1.0)
    assert not gain.jpeg_derived(y)
    assert gain.jpeg_derived(cv2.imdecode(cv2.imencode(".jpg", y, [cv2.IMWRITE_JPEG_QUALITY, 75])[1],
                                          cv2.IMREAD_UNCHANGED))


def test_readme_python_example_runs_as_written():
    """The README's Python API block, executed verbatim."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})


def test_fit_head_learns_a_known_mapping():
    """The NumPy Adam fit recovers gains that are a fixed function of the features."""
    from rbqe_tf.gain_fit import fit_head
    rng = np.random.default_rng(9)
    x = rng.random((200, gain.NUM_FEATURES))
    y = np.stack([x[:, 0] - x[:, 1], 2 * x[:, 2], np.maximum(x[:, 3] - 0.5, 0),
                  -x[:, 4], x[:, 5] + x[:, 6]], 1)
    predictor = gain.GainPredictor(fit_head(x, y, seed=0, steps=1500))
    assert np.abs(predictor.predict_features(x) - y).mean() < 0.05
    assert np.abs(y - y.mean(0)).mean() > 0.2  # what predicting the mean would miss


def test_exit_0_refuses_what_an_enhanced_image_would(tiny):
    from rbqe_tf.enhancer import Enhancer
    enhancer = Enhancer(tiny)
    bad = np.full((16, 16), np.nan, np.float32)
    for exit in (0, 1):
        with pytest.raises(ValueError, match="NaN"):
            enhancer(bad, exit=exit)


def test_label_cache_reuses_relabels_and_refeatures(tmp_path):
    from rbqe_tf.gain_fit import cached_labels
    calls = []

    def make(model):
        calls.append(model)
        meta = np.array([[0, 0, 10], [1, 2, 0]])
        y = None if model is None else np.full((2, 5), float(len(calls)))
        return np.full((2, 3), float(len(calls))), y, meta

    path = tmp_path / "labels.npz"
    x, y, _ = cached_labels(path, make, "net")
    assert calls == ["net"] and y[0, 0] == 1
    x2, y2, _ = cached_labels(path, make, "net")  # cached: no call
    assert calls == ["net"] and np.array_equal(x2, x) and np.array_equal(y2, y)
    x3, y3, _ = cached_labels(path, make, "net", refeature=True)  # new features, same labels
    assert calls == ["net", None] and x3[0, 0] == 2 and y3[0, 0] == 1
    assert np.array_equal(np.load(path)["x"], x3)
    _, y4, _ = cached_labels(path, make, "net", relabel=True)
    assert calls[-1] == "net" and y4[0, 0] == 3

    def other_draws(model):
        return np.zeros((1, 3)), None, np.array([[5, 0, 50]])

    with pytest.raises(ValueError, match="made with other"):
        cached_labels(path, other_draws, "net", refeature=True)


def _two_heads(gain_bias, gate_bias):
    return gain.GainPredictor({**_weights(gain_bias), **{
        "gate_" + k: v for k, v in _weights(gate_bias).items() if k[0] in "wb"}})


def test_textureless_images_take_exit_0_whatever_the_heads_say():
    eager = _two_heads([1.0] * 5, [1.0] * 5)
    rule = {"margin": 0.4, "tolerance": 0.0}
    for flat in (np.full((64, 64), 16, np.uint8), np.full((64, 64, 3), 200, np.uint8)):
        assert gain.decide(eager, rule, flat)[0] == 0
    textured = np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)
    assert gain.decide(eager, rule, textured)[0] == 1


def test_the_gate_opens_only_where_the_gain_head_agrees():
    textured = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    rule = {"margin": 0.4, "tolerance": 0.0}
    # the gate alone would open (1.0 ≥ 0.4); the gain head's best 0.15 < GAIN_AGREEMENT_DB
    assert gain.decide(_two_heads([0.1, 0.15, 0, 0, 0], [1.0] * 5), rule, textured)[0] == 0
    assert gain.decide(_two_heads([0.1, 0.25, 0, 0, 0], [1.0] * 5), rule, textured)[0] == 2
    # and the gain head alone does not open it either
    assert gain.decide(_two_heads([0.1, 0.9, 0, 0, 0], [0.3] * 5), rule, textured)[0] == 0
