"""Network topology, parameter counts, MAC counts and staged execution."""
import numpy as np
import pytest

import keras
from rbqe_tf.config import get_config
from rbqe_tf.macs import count_macs, macs_per_exit, macs_per_stage
from rbqe_tf.model import ECA, RBQE, build_model, run_stages, weights_digest


@pytest.fixture(scope="module")
def rbqe():
    return build_model("rbqe")


def _expected_params(f=32, c=1, levels=6, eca_last_step=False):
    """Parameter count in closed form from docs/method.md, "Network" (two-bias separable convs)."""
    conv3 = lambda cin, cout: 9 * cin * cout + cout  # noqa: E731
    sep = lambda cin, cout: 10 * cin + cin * cout + cout  # noqa: E731
    exits = levels - 1
    encoder = conv3(c, f) + conv3(f, f) + exits * 3 * conv3(f, f)
    decoder = sum(4 * f * f + f + sep((j + 1) * f, f) + sep(f, f)
                  for j in range(1, exits + 1) for _ in range(exits + 1 - j))
    heads = exits * sep(f, c)
    # One 3-weight ECA per use: encoder inputs, decoder inputs, heads; the paper's
    # last step skips the ECA on its lower inputs and on its head.
    uses = exits + sum((j + 1) * (exits + 1 - j) for j in range(1, exits + 1)) + exits
    if not eca_last_step:
        uses -= exits + 1
    return encoder + decoder + heads + 3 * uses


def test_rbqe_parameter_count(rbqe):
    assert rbqe.count_params() == 300_455 == _expected_params()


def test_per_exit_parameter_counts(rbqe):
    # Monolithic path to each exit.
    assert [rbqe.exit_model(k).count_params() for k in range(1, 6)] == [
        45_901, 91_455, 147_933, 216_682, 299_031]
    # Progressive execution also holds the earlier heads: the paper's 45.9k / 91.8k /
    # 148.6k / 217.8k / 300.5k.
    sizes, cumulative = {}, []
    for stage in rbqe.stage_models():
        sizes.update({id(w): int(np.prod(w.shape)) for w in stage.weights})
        cumulative.append(sum(sizes.values()))
    assert [round(n / 100) / 10 for n in cumulative] == [45.9, 91.8, 148.6, 217.8, 300.5]
    assert cumulative[-1] == 300_455


@pytest.mark.parametrize("overrides", [dict(eca_last_step=True), dict(features=8, num_levels=4)])
def test_parameter_count_of_other_configs(overrides):
    model = build_model("rbqe", **overrides)
    expected = _expected_params(f=overrides.get("features", 32),
                                levels=overrides.get("num_levels", 6),
                                eca_last_step=overrides.get("eca_last_step", False))
    assert model.count_params() == expected


def _params_by_walking_the_graph(cfg):
    """Parameters of ``cfg``'s network, summed block by block in the order the steps build
    them (docs/method.md, "Network"): an independent tally, not the closed form above."""
    f, c = cfg.features, cfg.channels

    def conv(k, cin, cout):  # k×k kernel + bias
        return k * k * cin * cout + cout

    def separable(cin, cout):  # depthwise 3×3 (+ bias) then pointwise 1×1 (+ bias)
        return (9 * cin + cin) + conv(1, cin, cout)

    params = conv(3, c, f) + conv(3, f, f)  # input block x[0,0]
    eca_modules = 0
    for step in range(1, cfg.num_exits + 1):
        full_eca = cfg.eca_last_step or step < cfg.num_exits
        params += 3 * conv(3, f, f)  # down block x[step,0] (two 3×3 convs, one stride 2)
        eca_modules += 1  # on its input x[step-1,0]
        for j in range(1, step + 1):  # the diagonal x[step-j, j]
            params += conv(2, f, f)  # transposed 2×2 conv of the lower node
            params += separable((j + 1) * f, f) + separable(f, f)  # j same-level + 1 lower
            eca_modules += j + full_eca  # one per same-level input (+ the lower input)
        params += separable(f, c)  # head
        eca_modules += full_eca
    return params + 3 * eca_modules  # ECA: three 1-D conv weights, no bias


def test_tiny_variant_exact_parameter_count():
    # features = 4: input block 40 + 148; five down blocks 5·3·148 = 2,220; decoder
    # columns j = 1..5 hold 5, 4, 3, 2, 1 nodes of 68 (up) + (56·(j+1) + 4) + 60 each:
    # 1,220 + 1,200 + 1,068 + 824 + 468 = 4,780; five heads 5·45 = 225; 54 ECA modules
    # 54·3 = 162. Total 2,408 + 4,780 + 225 + 162 = 7,575.
    tiny = build_model("tiny")
    assert tiny.count_params() == 7_575
    assert _params_by_walking_the_graph(get_config("tiny")) == 7_575 == _expected_params(f=4)
    rbqe = get_config("rbqe")
    assert _params_by_walking_the_graph(rbqe) == 300_455
    assert _params_by_walking_the_graph(
        get_config("tiny", eca_last_step=True)) == _expected_params(f=4, eca_last_step=True)


def test_tiny_variant_is_small_with_same_topology():
    tiny = build_model("tiny")
    assert 1_000 < tiny.count_params() < 10_000
    assert len(tiny.outputs) == 5
    assert [l.name for l in tiny.layers] == [l.name for l in build_model("rbqe").layers]


def _eca_reference(x, kernel):
    """ECA in plain NumPy (docs/method.md, "Network"): per image and channel the mean over
    height and width; a 1-D cross-correlation of those means across channels with the three
    weights, zero beyond the first and last channel; sigmoid; each channel scaled by it."""
    w0, w1, w2 = kernel
    means = x.mean(axis=(1, 2))  # [N, C]
    padded = np.pad(means, ((0, 0), (1, 1)))
    mixed = w0 * padded[:, :-2] + w1 * padded[:, 1:-1] + w2 * padded[:, 2:]
    attention = 1.0 / (1.0 + np.exp(-mixed))
    return x * attention[:, None, None, :]


def test_eca_equals_a_plain_numpy_reference():
    # Channel means far apart (and far from 0) so a wrong neighbour shows.
    x = np.random.default_rng(3).random((2, 5, 7, 4)).astype(np.float32)
    x *= np.array([0.2, 1.0, 3.0, 6.0], np.float32)
    layer = ECA(name="eca")
    layer.build(x.shape)
    kernel = np.array([0.9, -1.3, 2.1], np.float32)  # asymmetric: the order matters
    layer.set_weights([kernel])
    expected = _eca_reference(x.astype(np.float64), kernel.astype(np.float64))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_deterministic_layer_names(rbqe):
    names = {l.name for l in rbqe.layers}
    for expected in ["enc_0_conv1", "enc_2_down", "dec_1_3_sep1_dw", "dec_1_3_eca_low",
                     "exit_4", "exit_4_pw", "exit_5"]:
        assert expected in names
    assert "dec_4_1_eca_low" not in names and "exit_5_eca" not in names  # paper's last step
    assert rbqe.output_names == [f"exit_{k}" for k in range(1, 6)]


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        build_model("huge")


def test_config_round_trip_and_saving(tmp_path):
    model = build_model("tiny")
    clone = RBQE.from_config(model.get_config())
    architecture = lambda m: {k: v for k, v in m.get_config().items() if k != "weights_digest"}
    assert architecture(clone) == architecture(model)
    assert clone.saved_weights_digest == weights_digest(model) != weights_digest(clone)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert weights_digest(loaded) == loaded.saved_weights_digest == weights_digest(model)
    y = np.random.default_rng(0).random((1, 32, 64, 1), np.float32)
    for a, b in zip(model(y), loaded(y)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_exits_add_the_input_back():
    model = build_model("tiny")
    for layer in model.layers:  # zero every head: each exit must equal its input
        if layer.name.startswith("exit_") and layer.name.endswith("_pw"):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    y = np.random.default_rng(1).random((2, 64, 32, 1), np.float32)
    for out in model(y):
        np.testing.assert_allclose(np.asarray(out), y, atol=1e-7)


def test_stages_equal_monolithic_exits():
    model = build_model("rbqe")
    y = np.random.default_rng(2).random((2, 64, 96, 1), np.float32)
    stages = model.stage_models()
    for k, (full, staged) in enumerate(zip(model(y), run_stages(stages, y)), 1):
        np.testing.assert_allclose(np.asarray(staged), np.asarray(full), atol=1e-6)
        np.testing.assert_allclose(np.asarray(model.exit_model(k)(y)), np.asarray(full),
                                   atol=1e-6)


def test_stage_io_is_plain_tensors_in_declared_order():
    model = build_model("tiny")
    stages = model.stage_models()
    for k, stage in enumerate(stages, 1):
        assert [t.name for t in stage.inputs] == ["y"] + [
            f"x_{i}_{j}" for i, j in model.stage_input_keys(k)]
        assert len(stage.outputs) == 1 + len(model.stage_feature_keys(k))
    assert model.stage_feature_keys(1) == [(0, 0), (1, 0), (0, 1)]
    assert model.stage_feature_keys(5) == []


def _hand_macs_exit1(h, w, f=32):
    """Exit 1 counted by hand from docs/method.md, "Network" (ECA scaling excluded, 1-D conv
    included)."""
    full, half = h * w, h * w // 4
    input_conv = full * f * 9 + full * f * f * 9
    down = 2 * full * f * f * 9 + half * f * f * 9
    up = half * f * f * 4 + full * 2 * f * 9 + full * 2 * f * f + full * f * 9 + full * f * f
    head = full * f * 9 + full * f
    eca = 4 * 3 * f
    return input_conv + down + up + head + eca


def test_mac_counter_matches_hand_count_and_published_exact_figures(rbqe):
    per_exit = macs_per_exit(rbqe, 512, 512)
    assert per_exit[0] == _hand_macs_exit1(512, 512)
    # The exact counts of docs/method.md, "Network": 9.31 / 12.64 / 15.46 / 18.50 / 21.93 GMAC.
    assert [round(m / 1e9, 2) for m in per_exit] == [9.31, 12.64, 15.46, 18.50, 21.93]
    assert macs_per_exit(rbqe, 64, 128)[0] == _hand_macs_exit1(64, 128)


def test_staged_execution_does_no_recomputation(rbqe):
    h, w, f = 128, 96, 32
    per_exit, per_stage = macs_per_exit(rbqe, h, w), macs_per_stage(rbqe, h, w)
    head = h * w * (9 * f + f) + 3 * f  # ECA + separable 3x3 (32 -> 1) of exits 1..4
    # Stages 1..k cost exactly exit k plus the heads of the exits before it.
    for k in range(1, 6):
        assert sum(per_stage[:k]) == per_exit[k - 1] + (k - 1) * head


def test_mac_counter_needs_static_shapes(rbqe):
    with pytest.raises(ValueError, match="dynamic shape"):
        count_macs(rbqe)


def test_get_config_variant_overrides():
    assert get_config("tiny").features == 4
    assert get_config("rbqe", features=16).features == 16
