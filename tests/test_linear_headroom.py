"""The oracle linear-filter bound: exact on linearly degraded images, equal to a
loop-built least-squares reference, and JPEG's known linear headroom on a photo."""
import json

import numpy as np
import pytest

from benchmarks import linear_headroom
from rbqe_tf.sources import reference_images
from rbqe_tf.image_io import write_image


def test_undoes_a_linear_degradation_exactly():
    gt = reference_images()["camera"][:64, :64]
    negated = (255 - gt).astype(np.uint8)  # gt = 255 - decoded: one tap and an offset
    np.testing.assert_array_equal(linear_headroom.oracle_filter(negated, gt, taps=3), gt)


def test_matches_a_loop_built_least_squares_fit():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (7, 6)).astype(np.uint8)
    decoded = np.clip(gt + rng.normal(0, 9, gt.shape), 0, 255).round().astype(np.uint8)
    rows = []
    for y in range(7):
        for x in range(6):
            window = [decoded[abs(y + dy) if y + dy < 7 else 12 - (y + dy),
                              abs(x + dx) if x + dx < 6 else 10 - (x + dx)]
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            rows.append(window + [1])
    x = np.array(rows, np.float64)
    w = np.linalg.lstsq(x, gt.ravel() - decoded.ravel().astype(np.float64), rcond=None)[0]
    expected = np.clip(np.round(decoded + (x @ w).reshape(gt.shape)), 0, 255)
    np.testing.assert_array_equal(linear_headroom.oracle_filter(decoded, gt, taps=3), expected)


def test_jpeg_qf10_has_linear_headroom_and_the_cli_writes_it(tmp_path, capsys):
    write_image(str(tmp_path / "coins.png"), reference_images()["coins"][:128, :128])
    out = tmp_path / "h.json"
    assert linear_headroom.main(["--data", str(tmp_path), "--levels", "10,90",
                                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["levels"]
    assert rows["10"]["oracle_delta_psnr"] > 0.3  # Classic5 mean: +0.77 dB
    assert rows["10"]["oracle_delta_psnr"] > rows["90"]["oracle_delta_psnr"]
    assert "oracle ΔPSNR" in capsys.readouterr().out


def test_even_taps_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        linear_headroom.main(["--data", str(tmp_path), "--taps", "4"])


def test_bad_level_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        linear_headroom.main(["--data", str(tmp_path), "--codec", "hevc", "--levels", "60"])
    assert capsys.readouterr().err.strip().endswith("error: hevc level 60 is outside 0..51")
