"""The Beam pipeline (``python -m rbqe_tf.pipeline``) on the DirectRunner with the tiny
model: outputs byte-identical to ``python -m rbqe_tf.enhance`` (a video's frames
identical), a corrupt file as a dead-letter record, a SIGKILLed run finished by a re-run
with every input written once, the TFLite path, the output rules (names below a glob's
folder, one writer per name, no input replaced, the output folder left out, folders
refused) and one-line usage errors."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

beam = pytest.importorskip("apache_beam", reason="the pipeline extra is not installed "
                           "(pip install -e \".[pipeline]\")")

from rbqe_tf import pipeline_steps as steps  # noqa: E402
from rbqe_tf.image_io import UNREADABLE, write_image  # noqa: E402
from clips import make_clip  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _blocky(shape, seed):
    """An 8-bit image with 8×8 blocks and noise, so that exits differ."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.random((shape[0] // 8 + 1, shape[1] // 8 + 1, *shape[2:])),
                   np.ones((8, 8) + (1,) * (len(shape) - 2)))[:shape[0], :shape[1]]
    return np.round(np.clip(base + rng.normal(0, 0.04, shape), 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model):
    """Inputs (JPEGs of four qualities, a gray PNG, one in a subfolder, a video, a corrupt
    file), the tiny model, and the enhance CLI's outputs for them (the reference)."""
    root = tmp_path_factory.mktemp("corpus")
    images = root / "in"
    (images / "sub").mkdir(parents=True)
    for n, quality in enumerate((10, 30, 60, 90)):
        write_image(images / f"q{quality}.jpg", _blocky((72, 96, 3), n), quality=quality)
    write_image(images / "gray.png", _blocky((64, 48), 5))
    write_image(images / "sub" / "deep.jpg", _blocky((40, 56, 3), 6), quality=20)
    make_clip(images / "clip.mp4", frames=4, audio=False)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    weights = root / "tiny.keras"
    tiny_model.save(weights)
    ref = root / "ref"
    proc = subprocess.run([sys.executable, "-m", "rbqe_tf.enhance", str(images), "--recursive",
                           "--out", str(ref), "--weights", str(weights)],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and "broken.jpg: error: " + UNREADABLE in proc.stderr, proc.stderr
    return images, weights, ref


def _pipeline(corpus, out, *args, wait=True):
    images, weights, _ = corpus
    command = [sys.executable, "-m", "rbqe_tf.pipeline", "--input", f"{images}/**",
               "--output", str(out), "--weights", str(weights), *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=ENV, cwd=REPO, start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO,
                          timeout=300)


def _outputs(folder):
    """Relative path → content of the outputs below ``folder``: a PNG's bytes, an .mkv's
    decoded frames (Matroska files carry a random segment UID, so two runs of the CLI
    differ too); temporary files, whose names start with a dot, are not among them."""
    found = {}
    for path in glob.glob(f"{folder}/**/*.png", recursive=True):
        with open(path, "rb") as f:
            found[os.path.relpath(path, folder)] = f.read()
    for path in glob.glob(f"{folder}/**/*.mkv", recursive=True):
        with av.open(path) as f:
            found[os.path.relpath(path, folder)] = b"".join(
                frame.to_ndarray().tobytes() for frame in f.decode(video=0))
    return found


def _manifest(out):
    (path,) = glob.glob(f"{out}/manifest-*.jsonl")
    with open(path) as f:
        return {os.path.basename(r["input"]): r for r in map(json.loads, f)}


@pytest.mark.slow
def test_outputs_equal_the_cli_and_the_corrupt_file_is_a_dead_letter(corpus, tmp_path):
    out = tmp_path / "out"
    proc = _pipeline(corpus, out)
    assert proc.returncode == 1, proc.stderr  # one input failed
    reference = _outputs(corpus[2])
    assert sorted(reference) == ["clip.mkv", "gray.png", "q10.png", "q30.png", "q60.png",
                                 "q90.png", "sub/deep.png"]
    assert _outputs(out) == reference  # byte for byte, names included
    records = _manifest(out)
    assert sorted(records) == ["broken.jpg", "clip.mp4", "deep.jpg", "gray.png", "q10.jpg",
                               "q30.jpg", "q60.jpg", "q90.jpg"]
    broken = records.pop("broken.jpg")
    assert broken["status"] == "error" and broken["error"] == UNREADABLE
    assert broken["output"] == str(out / "broken.png") and broken["exit"] is None
    clip = records.pop("clip.mp4")
    assert clip["status"] == "enhanced" and clip["frames"] == 4 and sum(clip["exit_histogram"]) == 4
    assert {r["status"] for r in records.values()} == {"enhanced"}
    assert all(1 <= r["exit"] <= 5 and r["scores"] is not None and r["error"] is None
               and r["codec"] == "jpeg" and r["model"].startswith("keras:")
               for r in records.values())
    assert "7 enhanced, 0 already there, 1 failed" in proc.stdout
    assert proc.stderr.strip() == f"{corpus[0]}/broken.jpg: error: {UNREADABLE}"


@pytest.mark.slow
def test_a_killed_run_is_finished_by_a_rerun_writing_each_input_once(corpus, tmp_path):
    out = tmp_path / "out"
    run = _pipeline(corpus, out, wait=False)
    deadline = time.monotonic() + 240
    while not _outputs(out) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)  # the driver and its worker processes
    run.wait()
    written = _outputs(out)
    reference = _outputs(corpus[2])
    assert written and all(written[name] == reference[name] for name in written)  # none partial
    if len(written) == len(reference):  # the kill came after the last write: make work
        for name in list(written)[::2]:
            os.unlink(out / name)
        written = _outputs(out)
    stale = out / ".tmp-999999999-left.png"  # a temporary file of a killed writer
    stale.write_bytes(b"partial")
    before = {name: os.stat(out / name).st_mtime_ns for name in written}
    proc = _pipeline(corpus, out, "--direct_running_mode", "in_memory")  # the quicker start
    assert proc.returncode == 1, proc.stderr
    assert "temporary file(s) an interrupted run left" in proc.stdout and not stale.exists()
    assert _outputs(out) == reference
    assert {name: os.stat(out / name).st_mtime_ns for name in written} == before  # not rewritten
    records = _manifest(out)
    statuses = {os.path.relpath(r["output"], out): r["status"] for r in records.values()}
    assert {n for n, s in statuses.items() if s == "exists"} == set(written)
    assert {n for n, s in statuses.items() if s == "enhanced"} == set(reference) - set(written)
    assert statuses["broken.png"] == "error" and len(records) == len(reference) + 1


@pytest.mark.slow
def test_tflite_outputs_equal_the_runner_cli(corpus, tmp_path, export_tiny):
    """--model tflite: the TensorFlow-free workers give export.run's bytes, and its
    frames and sidecar model name for a video."""
    images, _, _ = corpus
    models = export_tiny("fp32")
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run([sys.executable, "-m", "export.run", str(images), "--recursive", "--models",
                    models, "--out", str(ref)], capture_output=True, env=ENV, cwd=REPO, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "rbqe_tf.pipeline", "--input", f"{images}/**",
                           "--output", str(out), "--model", "tflite", "--models", models],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert len(_outputs(ref)) == 7 and _outputs(out) == _outputs(ref)
    sidecars = [json.loads((folder / "clip.mkv.json").read_text()) for folder in (ref, out)]
    assert sidecars[0]["model"] == sidecars[1]["model"] == "jpeg export"
    records = _manifest(out)
    assert records["broken.jpg"]["error"] == UNREADABLE
    assert records["clip.mp4"]["status"] == "enhanced" and records["clip.mp4"]["frames"] == 4
    assert {r["model"] for r in records.values()} == {f"tflite:{models}"}


def _match_and_claim(settings, patterns):
    """MatchFiles then ClaimOutputs, without a runner → (claims, error records)."""
    groups = {}
    for pattern in patterns:
        for item in steps.MatchFiles(settings).process(pattern):
            if isinstance(item, beam.pvalue.TaggedOutput):
                groups.setdefault("errors", []).append(item.value)
            else:
                groups.setdefault(item[0], []).append(item[1])
    errors = groups.pop("errors", [])
    claims = []
    for key, entries in groups.items():
        for item in steps.ClaimOutputs(settings).process((key, entries)):
            if isinstance(item, beam.pvalue.TaggedOutput):
                errors.append(item.value)
            else:
                claims.append(item)
    return sorted(claims), sorted(errors, key=lambda r: r["input"])


def test_output_rules(tmp_path):
    for name in ("a.jpg", "a.png", "b.png", "sub/c.jpg", "sub/old.jpg", "out/old.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    settings = steps.Settings(str(tmp_path / "out"), steps.ModelSpec("keras", "m.keras", "jpeg"))
    claims, errors = _match_and_claim(settings, [f"{tmp_path}/*", f"{tmp_path}/none*.jpg",
                                                 f"{tmp_path}/sub/c.jpg", f"{tmp_path}/sub"])
    # a.jpg and a.png both name a.png: the first by path writes it.
    assert [(os.path.relpath(p, tmp_path), os.path.relpath(t, tmp_path)) for p, _, t in claims] \
        == [("a.jpg", "out/a.png"), ("b.png", "out/b.png"), ("sub/c.jpg", "out/c.png")]
    assert [(os.path.basename(r["input"]), r["error"]) for r in errors] == [
        ("a.png", f"output {tmp_path}/out/a.png already written by another input with the "
                  "same name in this run"),
        ("none*.jpg", "no file matches"),
        ("sub", f"a folder: give a glob such as {tmp_path}/sub/*.jpg or {tmp_path}/sub/**")]
    # A file of the output folder is never enhanced, and never replaced while it is an input.
    claims, errors = _match_and_claim(settings, [f"{tmp_path}/sub/old.jpg",
                                                 f"{tmp_path}/out/old.png"])
    assert claims == [] and [r["error"] for r in errors] == [
        f"output {tmp_path}/out/old.png would overwrite an input; choose another --output"]


def test_output_names_keep_the_path_below_the_glob():
    assert steps.output_name("/d/photos/*.jpg", "/d/photos/x.jpg") == "x"
    assert steps.output_name("/d/**/*.jpg", "/d/2020/a/x.jpg") == "2020/a/x"
    assert steps.output_name("/d/p*/x.jpg", "/d/photos/x.jpg") == "photos/x"
    assert steps.output_name("/d/photos/x.tar.jpg", "/d/photos/x.tar.jpg") == "x.tar"
    assert steps.output_name("gs://b/in/*", "gs://b/in/y.png") == "y"


@pytest.mark.parametrize("args,message", [
    ([], "--input is required"),
    (["--input", "x.jpg"], "--output is required"),
    (["--input", "x.jpg", "--output", "gs://b/out"], "--output must be a folder on a mounted"),
    (["--input", "x.jpg", "--output", "o", "--model", "tflite"], "--model tflite needs --models"),
    (["--input", "x.jpg", "--output", "o", "--exit", "7"], "--exit must be in 0..5, got 7"),
    (["--input", "@missing.txt", "--output", "o"], "@missing.txt: no such file"),
    (["--input", "x.jpg", "--output", "o", "--runer", "DirectRunner"], "unknown flag(s): --runer"),
])
def test_usage_errors_are_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "rbqe_tf.pipeline", *args], capture_output=True,
                          text=True, env=ENV, cwd=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert not (tmp_path / "o").exists()
