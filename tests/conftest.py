"""Shared test settings and fixtures: quiet TensorFlow, the shared data folder.

Fixtures that several test modules need live here, so that no test module imports
another. Stateless helpers that are plain functions (``tests/fuzzing.py``) stay in a
helper module.
"""
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` (training and validation images); skips the test if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model():
    """A seeded ``tiny`` RBQE whose exits differ visibly from their input and from each
    other: head k's pointwise kernel is scaled by 40·k (a fresh tiny network is nearly
    the identity, which would make every exit, and every exit's score, the same).
    Shared by the whole session: tests must not change its weights."""
    import keras
    from rbqe_tf.model import build_model

    keras.utils.set_random_seed(7)
    model = build_model("tiny")
    for k in range(1, 6):
        layer = model.get_layer(f"exit_{k}_pw")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 40 * k, bias])
    return model


@pytest.fixture(scope="session")
def samples_dir():
    """The repository's ``samples/`` folder (four small JPEGs; ships with every clone)."""
    return REPO / "samples"


class TinyExports:
    """``tiny_model`` exported at a 64×64 tile, each quantization mode at most once per
    session (an export takes from seconds to minutes): ``export_tiny("fp32")`` → folder.

    Calibration and validation both read one sample photo from ``images``; ``exporter``
    is the :class:`rbqe_tf.conversion.exporter.Exporter` that made the exports."""

    tile = 64

    def __init__(self, model, root, photo):
        self.model, self.root, self.photo = model, Path(root), Path(photo)
        self.images = str(self.root / "images")
        self._exporter, self._folders = None, {}

    @property
    def exporter(self):
        if self._exporter is None:
            from rbqe_tf.conversion.exporter import Exporter
            os.makedirs(self.images, exist_ok=True)
            shutil.copy(self.photo, self.images)
            self._exporter = Exporter(self.model, self.tile)
        return self._exporter

    def __call__(self, mode):
        if mode not in self._folders:
            folder = str(self.root / mode)
            self.exporter.export(folder, mode, (self.images, 1), (self.images, 1),
                                 log=lambda line: None)
            self._folders[mode] = folder
        return self._folders[mode]


@pytest.fixture(scope="session")
def export_tiny(tiny_model, samples_dir, tmp_path_factory):
    """``export_tiny(mode)`` → a folder of ``tiny_model`` exported in ``mode`` (cached for
    the session; read it, copy it to change it)."""
    return TinyExports(tiny_model, tmp_path_factory.mktemp("tiny_exports"),
                       samples_dir / "chelsea_q30.jpg")


@pytest.fixture(scope="session")
def interpreter_of():
    """``interpreter_of(data)`` → an allocated LiteRT interpreter (XNNPACK on, one thread)
    of the .tflite bytes ``data``."""
    from ai_edge_litert import interpreter as litert

    def make(data):
        interpreter = litert.Interpreter(model_content=data, num_threads=1)
        interpreter.allocate_tensors()
        return interpreter
    return make


@pytest.fixture(scope="session")
def with_gain():
    """``with_gain(folder, dest, bias, rule)`` → ``dest``, a copy of export ``folder`` that
    carries a constant gain predictor (output ``bias``, one value per exit) and the rule
    ``{"margin": dB, "tolerance": dB}``, as the exporter writes it for weights with
    ``<weights>.gain.npz`` beside them."""
    import json

    import numpy as np

    from rbqe_tf.litert.manifest import sha256_file, write_manifest
    from rbqe_tf import gain

    def copy(folder, dest, bias, rule):
        shutil.copytree(folder, dest)
        n = gain.NUM_FEATURES
        gain.GainPredictor({"mean": np.zeros(n), "scale": np.ones(n), "w0": np.zeros((n, 2)),
                            "b0": np.zeros(2), "w1": np.zeros((2, 5)),
                            "b1": np.array(bias, float)}).save(os.path.join(dest, "gain_jpeg.npz"))
        with open(os.path.join(dest, "manifest.json")) as f:
            manifest = json.load(f)
        manifest["gain"] = {"jpeg": {"path": "gain_jpeg.npz",
                                     "sha256": sha256_file(os.path.join(dest, "gain_jpeg.npz")),
                                     **rule}}
        write_manifest(dest, {k: v for k, v in manifest.items()
                              if k not in ("format", "format_version")})
        return str(dest)
    return copy
