"""A newcomer's path: setup.sh installs only what is missing, the test extra covers every
import, CI runs the README's quick start verbatim in a fresh virtual environment, and
what the README's commands write is git-ignored."""
import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL = {"rbqe_tf", "export", "datasets", "benchmarks", "tools", "tests", "conftest", "setup",
         "fuzzing"}
DISTRIBUTIONS = {  # import name → distribution name, where they differ
    "absl": "absl-py", "ai_edge_litert": "ai-edge-litert", "cv2": "opencv-python-headless",
    "tensorflow_model_optimization": "tensorflow-model-optimization", "tf_keras": "tf-keras",
    "PIL": "pillow", "pillow_heif": "pillow-heif", "apache_beam": "apache-beam",
    "importlinter": "import-linter"}


def _fake_bin(tmp_path, ffmpeg_has_x265, uid):
    """A PATH folder whose ffmpeg prints a long encoder list (with or without libx265,
    first, so ``grep -q`` would stop reading early), and whose apt-get, sudo, id and python
    only record their arguments."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    codec = "libx265" if ffmpeg_has_x265 else "libx264"
    scripts = {
        "ffmpeg": f'echo " V....D {codec}  H.265 / HEVC"\n'
                  'for i in $(seq 1 3000); do echo " A....D codec$i  padding line"; done',
        "apt-get": f'echo "apt-get $*" >> {log}',
        "sudo": f'echo "sudo $*" >> {log}; "$@"',
        "id": f'if [ "$1" = -u ]; then echo {uid}; else /usr/bin/id "$@"; fi',
        "python": f'echo "python $*" >> {log}',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir, log


@pytest.mark.parametrize("has_x265,uid,expected", [
    (True, 0, []),
    (True, 1000, []),
    (False, 0, ["apt-get update -qq", "apt-get install -y -qq ffmpeg"]),
    (False, 1000, ["sudo apt-get update -qq", "apt-get update -qq",
                   "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg",
                   "apt-get install -y -qq ffmpeg"]),
])
def test_setup_installs_only_what_is_missing(tmp_path, has_x265, uid, expected):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bin_dir, log = _fake_bin(tmp_path, has_x265, uid)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "setup.sh")], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[:-1] == expected
    assert calls[-1] == "python -m pip install -q --disable-pip-version-check -e .[test]"
    assert ("installing ffmpeg" in proc.stderr) == (not has_x265)


def _setup_requirements():
    """install_requires + extras_require["test"] + ["pipeline"] of setup.py, as distribution
    names (the pipeline extra is optional: only rbqe_tf.pipeline_steps imports Apache Beam,
    and tests/test_pipeline.py skips without it)."""
    call = next(n for n in ast.walk(ast.parse((REPO / "setup.py").read_text()))
                if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup")
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords
                if k.arg in ("install_requires", "extras_require")}
    extras = keywords["extras_require"]
    specs = keywords["install_requires"] + extras["test"] + extras["pipeline"]
    return {re.split(r"[<>=!~;\[ ]", s, maxsplit=1)[0].lower() for s in specs}


def _third_party_imports():
    local = LOCAL | {p.stem for p in REPO.rglob("*.py")}
    found = {}
    for folder in ("rbqe_tf", "export", "datasets", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_package_and_test_extra_cover_every_import():
    """`pip install -e .[test]` installs every third-party module that the package and its
    tests import (matplotlib, for the evaluation plots, was once missing)."""
    required = _setup_requirements()
    missing = {name: where for name, where in _third_party_imports().items()
               if DISTRIBUTIONS.get(name, name).lower() not in required}
    assert not missing, f"imported but not in setup.py (install_requires or test): {missing}"


def test_the_wheel_installs_no_top_level_name_of_a_common_library(monkeypatch):
    """An installed ``datasets`` package would overwrite Hugging Face's (and an uninstall
    remove it), an installed ``export`` PyPI's ``export``: the repository's ``datasets/``
    and ``export/`` commands stay out of the wheel, whose one top-level name is
    ``rbqe_tf`` (a new one is a decision). The engines they run are in the package."""
    pytest.importorskip("setuptools")  # it provides distutils (Python 3.12 has none)
    from distutils.core import run_setup
    monkeypatch.chdir(REPO)  # find_packages() looks below the working folder
    distribution = run_setup("setup.py", stop_after="init")
    assert distribution.py_modules is None
    assert {name.split(".")[0] for name in distribution.packages} == {"rbqe_tf"}
    assert {"rbqe_tf.litert", "rbqe_tf.conversion", "rbqe_tf.harness"} <= set(
        distribution.packages)


def test_pytest_options_show_the_slowest_tests():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert "--durations=15" in config["tool:pytest"]["addopts"].split()


def test_ci_runs_the_readme_quick_start_verbatim_in_a_fresh_venv():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.search(r"```bash\n(.*?)```", quick, re.S).group(1).strip().splitlines()
    assert commands == ["bash setup.sh && python -m rbqe_tf.enhance --demo --out enhanced",
                        "bash setup.sh && python -m pytest -q"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    venv = next(i for i, line in enumerate(ci) if "-m venv" in line)
    assert any(line.startswith("rm -rf") for line in ci[:venv])  # fresh on every run
    assert any(line.startswith("source") and "activate" in line for line in ci[venv:])
    positions = [ci.index(command) for command in commands]  # verbatim, whole lines
    assert venv < positions[0] < positions[1]
    # set -e goes on after a failing `a` of `a && b`: the next line checks the status.
    assert all(ci[i + 1] == "check" for i in positions)


def test_ci_then_installs_the_pipeline_extra_and_runs_its_tests():
    """After the quick start (whose suite skips the pipeline tests without Beam), CI installs
    the pipeline extra and runs them; the import comes first, so that a Beam that fails to
    import fails CI instead of skipping the tests."""
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    quick_start = ci.index("bash setup.sh && python -m pytest -q")
    install = ci.index('python -m pip install -q --disable-pip-version-check -e ".[pipeline]"')
    tests = ci.index('python -c "import apache_beam" && python -m pytest -q tests/test_pipeline.py')
    assert quick_start < install < tests and ci[tests + 1] == "check"


def test_generated_folders_are_git_ignored():
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    paths = ["enhanced/camera_jpeg10_in.png", "enhanced_tflite/a.png", "tflite/manifest.json",
             "tflite_512/exit_1.tflite", "plots/tradeoff.png", ".ci/venv/bin/python",
             "eval.json"]
    proc = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True,
                          text=True)
    assert sorted(proc.stdout.split()) == sorted(paths)
