"""The command lines answer ``--help`` and usage errors at once, before TensorFlow (or the
models) load: status 0 for help, one ``error:`` line and status 2 for bad usage, every
numeric flag range-checked, and nothing created on disk."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["rbqe_tf.enhance", "export.run", "export.tflite"]


def _run(module, *args, cwd=REPO):
    """(process, seconds, imported top-level modules) of ``python -X importtime -m module``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    seconds = time.perf_counter() - start
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    proc.stderr = "\n".join(line for line in proc.stderr.splitlines()
                            if not line.startswith("import time:"))
    return proc, seconds, imported


@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_instant_and_exits_0(module, flag):
    proc, seconds, imported = _run(module, flag)
    assert proc.returncode == 0, proc.stderr
    assert "--out" in proc.stdout and proc.stderr == ""
    assert "tensorflow" not in imported and "ai_edge_litert" not in imported
    assert seconds < 5  # ~0.5 s on the 2-core machine; TensorFlow alone takes 5-20 s


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("usage")
    (root / "empty").mkdir()
    (root / "texts").mkdir()
    (root / "texts" / "notes.txt").write_text("not an image")
    (root / "texts" / "sub").mkdir()
    cv2.imwrite(str(root / "a.png"), np.zeros((16, 16), np.uint8))
    (root / "afile").write_text("")
    return root


ENHANCE_ERRORS = [
    ([], "no input images given"),
    (["{root}/missing.png"], "{root}/missing.png: no such file"),
    (["{root}/empty"], "{root}/empty: no image files"),
    (["{root}/texts"], "{root}/texts: no image files (skipped 2: {root}/texts/sub/ (a folder: "
                       "add --recursive to enter it); {root}/texts/notes.txt (not an image "
                       "file))"),
    (["{a}", "--threshold", "1.5"], "--threshold must be a number in [0, 1], got 1.5"),
    (["{a}", "--threshold", "-0.01"], "--threshold must be a number in [0, 1], got -0.01"),
    (["{a}", "--threshold", "nan"], "--threshold must be a number in [0, 1], got nan"),
    (["{a}", "--exit", "-1"], "--exit must be in "),
    (["{a}", "--exit", "6"], "--exit must be in "),
    (["{a}", "--quality", "101"], "--quality must be in 1..100, got 101"),
    (["{a}", "--tile", "100"], "tile must be a positive multiple of 32, got 100"),
    (["{a}", "--tile", "0"], "tile must be a positive multiple of 32, got 0"),
    (["{a}", "--overlap", "12"], "overlap must be a multiple of 8 in 0..255, got 12"),
    (["{a}", "--tile", "64", "--overlap", "32"], "overlap must be a multiple of 8 in 0..31"),
    (["{a}", "--cache_mb", "-1"], "cache_mb must be >= 0, got -1"),
    (["{a}", "--format", "gif"], "value should be one of <png|jpg|webp|tiff|same>"),
    (["{a}", "--bogus"], "Unknown command line flag 'bogus'"),
    (["{a}", "--weights", "{root}/no.keras"], "{root}/no.keras: no such file"),
    (["{a}", "--demo"], "--demo takes no input images"),
    (["--demo", "--format", "jpg"], "--demo writes PNGs; --format applies to input images"),
]


@pytest.mark.parametrize("args,message", ENHANCE_ERRORS)
def test_enhance_usage_errors_come_before_tensorflow(folders, args, message):
    fill = {"root": folders, "a": folders / "a.png"}
    out = folders / "out"
    proc, _, imported = _run("rbqe_tf.enhance", *[a.format(**fill) for a in args],
                             "--out", out)
    assert proc.returncode == 2 and "tensorflow" not in imported
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert message.format(**fill) in proc.stderr
    assert not out.exists()  # nothing on disk before there is something to write


def test_enhance_output_folder_problems_come_before_tensorflow(folders):
    for out, message in [(folders / "afile", "cannot create output folder (a file of that name"),
                         (folders / "afile" / "x", "cannot create output folder")]:
        proc, _, imported = _run("rbqe_tf.enhance", folders / "a.png", "--out", out)
        assert proc.returncode == 2 and "tensorflow" not in imported
        assert message in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_enhance_defaults_are_the_enhancers():
    """The CLI repeats rbqe_tf.enhancer's tiling defaults (so --help needs no TensorFlow)."""
    from rbqe_tf import enhancer
    proc, _, _ = _run("rbqe_tf.enhance", "--help")
    for flag, value in [("tile", enhancer.DEFAULT_TILE), ("overlap", enhancer.DEFAULT_OVERLAP),
                        ("cache_mb", enhancer.DEFAULT_CACHE_MB)]:
        default = re.search(rf"--{flag}:.*?\(default: '([\d.]+)'\)", proc.stdout, re.S)
        assert float(default.group(1)) == value, flag


RUN_ERRORS = [
    (["{root}/empty"], "{root}/empty: no image files"),
    (["{a}", "--threshold", "2"], "--threshold must be a number in [0, 1], got 2"),
    (["{a}", "--exit", "-1"], "--exit must be >= 0, got -1"),
    (["{a}", "--quality", "0"], "--quality must be in 1..100, got 0"),
    (["{a}", "--overlap", "12"], "--overlap must be a multiple of 8, at least 8, got 12"),
    (["{a}", "--cache_mb", "-5"], "--cache_mb must be a number >= 0, got -5"),
    (["{a}", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["{a}", "--delegate", "{root}/no.so"], "--delegate {root}/no.so: no such file"),
]


@pytest.mark.parametrize("args,message", RUN_ERRORS)
def test_runner_usage_errors_come_before_the_models(folders, args, message):
    fill = {"root": folders, "a": folders / "a.png"}
    out = folders / "out"
    proc, _, imported = _run("export.run", *[a.format(**fill) for a in args],
                             "--models", folders / "nomodels", "--out", out)
    assert proc.returncode == 2 and "ai_edge_litert" not in imported
    assert proc.stderr == f"error: {message.format(**fill)}"
    assert not out.exists()


EXPORT_ERRORS = [
    (["--tile", "60"], "--tile must be a positive multiple of 32, got 60"),
    (["--calib_tile", "48"], "--calib_tile must be 0 or a multiple of 32 dividing --tile 256"),
    (["--calib_tile", "96"], "--calib_tile must be 0 or a multiple of 32 dividing --tile 256"),
    (["--calib_images", "0"], "--calib_images must be at least 1, got 0"),
    (["--val_images", "0"], "--val_images must be at least 1, got 0"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--weights", "{root}/no.keras"], "{root}/no.keras: no such file"),
    (["--from-qat", "{root}/norun", "--quantize"], "--from-qat {root}/norun: no such run"),
    (["--quantize", "int4"], "value should be one of"),
    (["--codecs", "av1"], "--codecs: expected some of jpeg, hevc, got av1"),
    (["extra"], "unexpected arguments: extra"),
]


@pytest.mark.parametrize("args,message", EXPORT_ERRORS)
def test_exporter_usage_errors_come_before_tensorflow(folders, args, message):
    fill = {"root": folders}
    out = folders / "tflite"
    proc, _, imported = _run("export.tflite", *[a.format(**fill) for a in args], "--out", out)
    assert proc.returncode == 2 and "tensorflow" not in imported
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert message.format(**fill) in proc.stderr
    assert not out.exists()


def test_cli_module_imports_no_tensorflow():
    code = ("import sys, rbqe_tf.cli, rbqe_tf.batch, export.tflite\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_runner_cli_offers_the_runners_decisions():
    """export.run repeats rbqe_tf.litert.runner.DECISIONS (so --help loads no LiteRT)."""
    from export import run
    from rbqe_tf.litert import runner
    assert run.DECISIONS == runner.DECISIONS
