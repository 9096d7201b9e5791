"""The house's rules: pyxv's modules import down the layers of bench/house.py, never in a circle."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("house", ROOT / "bench" / "house.py")
house = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(house)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_finds_a_circle_hidden_in_a_function_and_through_relative_imports(tmp_path):
    root = _tree(tmp_path, {
        "pyxv/__init__.py": "",
        "pyxv/nnet/__init__.py": "",
        "pyxv/nnet/config.py": "def f():\n    from .registry import build\n",
        "pyxv/nnet/registry.py": "from pyxv.nnet import config\n",
        "pyxv/nnet/losses.py": "from . import config\n",
    })
    mods, edges = house.import_graph(root)
    assert edges["pyxv.nnet.config"] == {"pyxv.nnet.registry"}
    assert edges["pyxv.nnet.registry"] == {"pyxv.nnet.config"}
    assert edges["pyxv.nnet.losses"] == {"pyxv.nnet.config"}
    assert house.circles(mods, edges) == [["pyxv.nnet.config", "pyxv.nnet.registry"]]


def test_finds_an_import_up_a_layer_and_allows_those_down(tmp_path):
    root = _tree(tmp_path, {
        "pyxv/__init__.py": "",
        "pyxv/io.py": "",
        "pyxv/features/__init__.py": "",
        "pyxv/features/frontend.py": "from ..io import x\nfrom ..train.data import y\n",
        "pyxv/train/__init__.py": "",
        "pyxv/train/data.py": "import pyxv.features.frontend\nfrom pyxv import io\n",
    })
    mods, edges = house.import_graph(root)
    assert house.upward_imports(edges) == [("pyxv.features.frontend", "pyxv.train.data")]
    assert house.circles(mods, edges) == [["pyxv.features.frontend", "pyxv.train.data"]]


def test_a_module_outside_every_layer_fails_the_check(tmp_path):
    root = _tree(tmp_path, {"pyxv/__init__.py": "", "pyxv/io.py": "", "pyxv/misc.py": "from . import io\n"})
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "house.py"), "--root", str(root), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "modules in no layer: 1\n  pyxv.misc" in r.stdout, r.stdout + r.stderr


def test_pyxv_has_no_circles_no_upward_imports_and_every_module_in_a_layer():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "house.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("modules in no layer: 0", "import circles: 0", "imports that run up a layer: 0"):
        assert line in r.stdout, r.stdout


def test_a_module_takes_the_layer_of_the_longest_name_that_holds_it():
    assert house.layer_of("pyxv.report.plots") == 0          # drawing only: the lowest layer
    assert house.layer_of("pyxv.report.collect") == len(house.LAYERS) - 1
    assert house.layer_of("pyxv.features.mfcc") == 1
    assert house.layer_of("pyxv.reporter") == -1             # a prefix of a name is not that name
    assert house.layer_of("pyxv") is None
