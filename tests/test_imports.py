"""Which module may import which (.importlinter, checked with import-linter): commands on
top, cores below them, the NumPy/OpenCV runtime at the bottom; no module imports a
command; the runtime and the runner import no TensorFlow. And the contracts name every
module, so that a new file cannot slip past them."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

REPO = Path(__file__).resolve().parents[1]
CONFIG = read_configuration(str(REPO / ".importlinter"))
CONTRACTS = {c["id"]: c for c in CONFIG["contracts_options"]}
# [[module, ...] per layer, top first]
LAYERS = [[name.strip(" ()") for name in line.replace("|", ":").split(":")]
          for line in CONTRACTS["layers"]["layers"]]


def _modules():
    """Module name → path of every module of the root packages (package faces excluded)."""
    found = {}
    for package in CONFIG["session_options"]["root_packages"]:
        for path in (REPO / package).rglob("*.py"):
            if path.name != "__init__.py":
                found[".".join(path.relative_to(REPO).with_suffix("").parts)] = path
    return found


def _runs_as_command(path):
    """Whether the module has an ``if __name__ == "__main__":`` block."""
    return any(isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)
               and "__main__" in ast.unparse(node.test)
               for node in ast.parse(path.read_text()).body)


def _named(module, names):
    """Whether ``names`` (modules, packages or ``package.*``) cover ``module``."""
    parts = module.split(".")
    return any(".".join(parts[:i]) in names or ".".join(parts[:i]) + ".*" in names
               for i in range(1, len(parts) + 1))


def test_import_contracts_are_kept():
    """`lint-imports` in the repository root, without a cache folder; its report on failure."""
    proc = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    report = proc.stdout[proc.stdout.find("Contracts\n"):]  # without the logo
    assert proc.returncode == 0, report + proc.stderr


def test_every_module_stands_in_a_layer():
    layered = {name for layer in LAYERS for name in layer}
    assert [m for m in _modules() if not _named(m, layered)] == []


def test_every_command_is_on_top_and_imported_by_no_module():
    commands = [m for m, path in _modules().items() if _runs_as_command(path)]
    assert "rbqe_tf.enhance" in commands and "export.run" in commands
    assert [m for m in commands if not _named(m, set(LAYERS[0]))] == []
    forbidden = set(CONTRACTS["no-command-imports"]["forbidden_modules"])
    assert [m for m in commands if not _named(m, forbidden)] == []


def test_the_three_lowest_layers_are_all_tensorflow_free():
    sources = set(CONTRACTS["tensorflow-free"]["source_modules"])
    assert set(LAYERS[-1]) | set(LAYERS[-2]) | set(LAYERS[-3]) <= sources
    assert {"tensorflow", "keras", "tf_keras"} <= set(
        CONTRACTS["tensorflow-free"]["forbidden_modules"])


@pytest.mark.parametrize("module", ["rbqe_tf.video", "export.run", "export.benchmark",
                                    "rbqe_tf.data", "rbqe_tf.train_config"])
def test_tensorflow_free_modules_load_no_tensorflow_when_imported(module):
    """The contracts read import statements; importing the module in a fresh process also
    catches what a library it uses, or a call at import time, would load."""
    code = (f"import sys, {module}\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'tf_keras'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
