"""benchmarks.routing_agreement: an export with the gain predictor takes the Keras exits."""
import json
import shutil

from benchmarks import routing_agreement
from rbqe_tf.sources import reference_images
from rbqe_tf.image_io import write_image


def test_report_counts_agreement_per_level(tmp_path, monkeypatch, export_tiny, with_gain):
    data = tmp_path / "data"
    data.mkdir()
    write_image(str(data / "coins.png"), reference_images()["coins"][:64, :64])
    folder = with_gain(export_tiny("fp32"), tmp_path / "export", [-1.0] * 5,
                       {"margin": 0.1, "tolerance": 0.0})

    class Constant:  # the Keras side with the same constant predictor: always exit 0
        def __call__(self, image):
            return type("R", (), {"exit": 0, "image": image})()

    monkeypatch.setattr("rbqe_tf.enhancer.Enhancer.from_weights", classmethod(
        lambda cls: Constant()))
    routing_agreement.main(["--models", folder, "--data", str(data), "--levels", "10,none",
                            "--json", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["decision"] == "gain"
    assert {k: v["same_exit"] for k, v in report["levels"].items()} == {"-1": 1.0, "10": 1.0}
    assert all(r["export_exit"] == 0 and r["export_gain"] == 0.0 for r in report["rows"])
    shutil.rmtree(data)
