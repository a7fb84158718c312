"""Quantization-aware training end to end on the tiny variant: the tf-keras twin equals
the Keras 3 model, a few fake-quantized steps lower the loss, and ``export.tflite
--from-qat`` writes int8 models that pass the exporter's checks.

tensorflow-model-optimization sets TF_USE_LEGACY_KERAS=1 when imported, so everything
that imports it runs in a subprocess; one QAT run is shared by the tests.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
T91 = ROOT.parent / "shared" / "data" / "train" / "t91"
SAMPLES = ROOT / "rbqe_tf" / "samples"  # ships with every clone
TILE = 64
STEPS = 6

pytestmark = pytest.mark.slow

QAT_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    from rbqe_tf.model import RBQE, build_model, load_model
    from rbqe_tf.train_config import TrainConfig
    init, run_dir, data, steps = sys.argv[1:5]
    keras.utils.set_random_seed(7)
    model = build_model("tiny")
    for k in range(1, 6):  # every exit 0.05 too bright: a loss six steps can visibly lower
        kernel, bias = model.get_layer(f"exit_{k}_pw").get_weights()
        model.get_layer(f"exit_{k}_pw").set_weights([kernel, bias + 0.05])
    model.save(init)
    from rbqe_tf import qat_model  # sets TF_USE_LEGACY_KERAS=1 from here on
    from rbqe_tf.qat_train import QATDriver
    from rbqe_tf.training import Training
    probe = np.random.default_rng(0).random((2, 64, 64, 1), np.float32)
    twin = qat_model.build_twin(model.rbqe_config)
    qat_model.copy_weights(model, twin)
    twin_error = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                     for a, b in zip(model(probe), twin(probe)))
    back = RBQE.from_config(model.get_config())
    qat_model.copy_weights(twin, back)
    round_trip = max(float(np.abs(a - b).max())
                     for a, b in zip(model.get_weights(), back.get_weights()))
    cfg = TrainConfig(data=[data], run_dir=run_dir, init=init, variant="tiny",
                      steps=int(steps), batch=4, patch=64, lr=3e-3, lr_schedule="constant",
                      ckpt_every=3, log_every=3, strategy="default")
    training = Training(cfg, ["test"])
    run = QATDriver(cfg, training.sampler)
    held = [training.sampler(n) for n in (0, 1)]  # the first batches it trains on
    before = [run.evaluate_loss(b) for b in held]
    status = training.run(run, rbqe_config=run.rbqe_config.to_dict())
    after = [run.evaluate_loss(b) for b in held]
    final = load_model(run_dir + "/final.keras")
    print(json.dumps({"twin_error": twin_error, "round_trip": round_trip,
                      "before": before, "after": after, "status": status,
                      "calibrated": run.calibrated,
                      "final_params": final.count_params()}))
""")


def _run(args, cwd=ROOT, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """The QAT run on t91, or on the package's two photos where the shared data is absent
    (a fresh clone in CI): everything but the loss check runs either way."""
    root = tmp_path_factory.mktemp("qat")
    data = T91 if T91.is_dir() else SAMPLES
    result = _run(["-c", QAT_SCRIPT, str(root / "tiny.keras"), str(root / "run"), str(data),
                   str(STEPS)])
    assert result.returncode == 0, result.stderr[-3000:]
    return root, json.loads(result.stdout.strip().splitlines()[-1])


def test_twin_matches_keras3_model_and_weights_round_trip(qat_run):
    _, report = qat_run
    assert report["twin_error"] <= 1e-5
    assert report["round_trip"] == 0.0


def test_qat_steps_lower_the_fake_quantized_loss(qat_run):
    root, report = qat_run
    assert report["status"] == 0 and report["calibrated"] > 100
    assert (root / "run" / "checkpoints" / f"ckpt-{STEPS}.npz").is_file()
    if not T91.is_dir():  # two photos: six steps of a near-identity tiny net move nothing
        pytest.skip(f"{T91}: shared training data absent; loss decrease not checked")
    assert np.mean(report["after"]) < np.mean(report["before"])
    assert 1_000 < report["final_params"] < 10_000


@pytest.fixture(scope="module")
def qat_export(qat_run):
    root, _ = qat_run
    images = root / "images"
    images.mkdir()
    (images / "chelsea_q30.jpg").write_bytes((ROOT / "samples" / "chelsea_q30.jpg").read_bytes())
    out = root / "tflite"
    result = _run(["-m", "export.tflite", "--quantize", "--from-qat", str(root / "run"),
                   "--out", str(out), "--tile", str(TILE), "--calib", str(images),
                   "--calib_images", "1", "--val_images", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    return root, out


def test_export_from_qat_writes_verified_int8_models(qat_export):
    root, out = qat_export
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantize"] == "int8_full_int8_io"
    assert manifest["qat"]["step"] == STEPS and manifest["calibration"] is None
    for k in range(1, 6):
        for name in (f"exit_{k}", f"stage_{k}"):
            entry = manifest["files"][name]
            assert (out / entry["path"]).is_file()
            assert all(t["dtype"] == "int8" for t in entry["inputs"] + entry["outputs"])
            assert "QUANTIZE" not in entry["ops"] and "DEQUANTIZE" not in entry["ops"]
            assert manifest["verification"]["parity"][name] >= 30.0


def test_qat_int8_exit_tracks_the_float_weights(qat_export):
    """Independent of the exporter's reference: the int8 exit 5 against the Keras 3
    model holding the QAT run's float weights (final.keras), in plain NumPy/LiteRT."""
    root, out = qat_export
    script = textwrap.dedent(f"""
        import json, numpy as np
        from ai_edge_litert.interpreter import Interpreter
        from rbqe_tf.model import load_model
        y = np.random.default_rng(1).random((1, {TILE}, {TILE}, 1), np.float32)
        ref = np.asarray(load_model("{root / 'run' / 'final.keras'}")(y)[4])
        it = Interpreter(model_path="{out / 'exit_5.tflite'}")
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        (s, z), (s2, z2) = i["quantization"], o["quantization"]
        it.set_tensor(i["index"], np.clip(np.round(y / s + z), -128, 127).astype(np.int8))
        it.invoke()
        lite = (it.get_tensor(o["index"]).astype(np.float32) - z2) * s2
        print(json.dumps(float(np.mean((lite - ref) ** 2))))
    """)
    result = _run(["-c", script])
    assert result.returncode == 0, result.stderr[-3000:]
    mse = json.loads(result.stdout.strip().splitlines()[-1])
    assert 10 * np.log10(1 / max(mse, 1e-12)) > 25.0


def test_bad_qat_inputs_are_one_line_errors(tmp_path):
    result = _run(["-m", "rbqe_tf.qat", "--data", str(tmp_path), "--run_dir",
                   str(tmp_path / "run")])
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --init is required (the trained float model to " \
                                    "fine-tune)"
    result = _run(["-m", "export.tflite", "--quantize", "--from-qat", str(tmp_path),
                   "--out", str(tmp_path / "out")])
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path}: not a QAT run directory " \
                                    "(no config.json)"
