"""``python -m rbqe_tf.enhance --demo``: the before/after table on the shipped photos."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from rbqe_tf import demo, metrics
from rbqe_tf.compression import compress_jpeg
from rbqe_tf.enhancer import Enhancer
from rbqe_tf.image_io import read_image
from rbqe_tf.model import build_model
from rbqe_tf.sources import reference_images

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^(\w+)\s+jpeg\s+(\d+|none)\s+([0-5])\s+.*?(\d+\.\d\d|inf) →\s+"
                 r"(\d+\.\d\d|inf) \(([+-]\d+\.\d\d|-inf) dB\)")


def test_rows_report_the_psnr_of_what_was_written(tmp_path):
    enhancer = Enhancer(build_model("tiny"), "jpeg", threshold=0.0)  # always exit 1
    rows = demo.run({"jpeg": enhancer}, tmp_path, progress=lambda line: None)
    refs = reference_images()
    assert [(r.image, r.level) for r in rows] == [(n, q) for n in sorted(refs)
                                                  for q in (10, 30, 50, 70, 90, -1)]
    for row in rows:
        gt = refs[row.image]
        compressed = gt if row.level == -1 else compress_jpeg(gt, row.level)[0]
        assert row.exit == 1 and row.psnr_in == metrics.psnr(gt, compressed)
        name = "none" if row.level == -1 else row.level
        written = read_image(tmp_path / f"{row.image}_jpeg{name}_out.png")
        assert written.shape == gt.shape and row.psnr_out == metrics.psnr(gt, written)
    assert np.mean([r.psnr_in for r in rows if r.level == 10]) < np.mean(
        [r.psnr_in for r in rows if r.level == 50])


def test_cli_demo_prints_the_table_and_reruns_over_its_own_outputs(tmp_path):
    weights = tmp_path / "tiny.keras"
    build_model("tiny").save(weights)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rbqe_tf.enhance", "--demo", "--weights",
                               str(weights), "--out", str(tmp_path / "out"), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=600)

    first = cli()
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [ROW.match(line) for line in first.stdout.splitlines()]
    rows = [m.groups() for m in rows if m]
    assert len(rows) == 18 and {r[0] for r in rows} == {"camera", "chelsea", "coins"}
    assert {r[1] for r in rows} == {"10", "30", "50", "70", "90", "none"}
    for *_, psnr_in, psnr_out, gain in rows:
        if "inf" not in (psnr_in, psnr_out):
            assert abs(float(psnr_out) - float(psnr_in) - float(gain)) <= 0.011
    assert len(list((tmp_path / "out").glob("*.png"))) == 36
    written = sorted((tmp_path / "out").glob("*.png"))
    again = cli()  # the README's command run twice: it replaces its own outputs
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    assert sorted((tmp_path / "out").glob("*.png")) == written
    assert cli("extra.png").stderr.strip() == "error: --demo takes no input images"
