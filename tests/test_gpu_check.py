"""bench/gpu.sh, the prepared GPU check, on a machine without a GPU: it says so
in one line and exits 0; --dry-run-cpu runs every part on the CPU where kaldiio,
PyYAML, scikit-learn, SciPy and soundfile are hidden from imports (a bare GPU
machine), kaldiio and PyYAML coming from wheels as --pack makes them."""
from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HIDDEN = ("kaldiio", "yaml", "_yaml", "sklearn", "scipy", "soundfile")

# Imported at start-up (PYTHONPATH): every site-packages directory stops finding the
# HIDDEN top-level modules (find_spec says None, as where they are not installed).
SITECUSTOMIZE = f'''
import sys
HIDDEN = {set(HIDDEN)!r}

class _Without:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, target=None):
        return None if name.split(".")[0] in HIDDEN else self.finder.find_spec(name, target)

    def invalidate_caches(self):
        self.finder.invalidate_caches()

def _finder(path):
    for hook in sys.path_hooks:
        try:
            return hook(path)
        except ImportError:
            pass

for p in list(sys.path):
    if p.rstrip("/").endswith(("site-packages", "dist-packages")):
        sys.path_importer_cache[p] = _Without(_finder(p))
'''


def wheel_of(dist: str, dest: Path) -> Path:
    """A wheel of the installed distribution ``dist`` (its RECORDed files), as
    ``bench/gpu.sh --pack`` downloads it from PyPI (no network in tests)."""
    d = md.distribution(dist)
    whl = dest / f"{dist}-{d.version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for f in d.files:
            if not str(f).startswith("..") and "__pycache__" not in str(f):
                z.write(f.locate(), str(f))
    return whl


def run_check(*args, env_extra=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable, **(env_extra or {}))
    t = time.time()
    p = subprocess.run([str(REPO / "bench" / "gpu.sh"), *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return p, time.time() - t


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """(PYTHONPATH that hides the packages, wheels dir holding kaldiio and PyYAML)."""
    root = tmp_path_factory.mktemp("bare")
    (root / "hide").mkdir()
    (root / "hide" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (root / "wheels").mkdir()
    for dist in ("kaldiio", "PyYAML"):
        wheel_of(dist, root / "wheels")
    return str(root / "hide"), root / "wheels"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the full check would run")
def test_without_a_gpu_one_line_and_exit_0():
    p, secs = run_check()
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("bench/gpu.sh: no GPU here (") and p.stdout.count("\n") == 1 and not p.stderr
    assert "nothing measured" in p.stdout and secs < 30


def test_the_hiding_works(bare):
    hide, _ = bare
    code = "import importlib.util as u; print([m for m in %r if u.find_spec(m)])" % (HIDDEN,)
    p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=hide), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_dry_run_on_cpu_runs_every_part_on_a_bare_machine(bare, tmp_path):
    hide, wheels = bare
    p, secs = run_check("--dry-run-cpu", "--wheels", str(wheels), "--out", str(tmp_path),
                        env_extra={"PYTHONPATH": hide})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = [line for line in p.stdout.splitlines() if line.startswith("gpu-check:")]
    assert f"kaldiio, yaml from {wheels}" in lines[0]
    for part in ("training, batch 4 x 40 frames", "training, batch 8 x 40 frames", "extraction in memory",
                 "extraction as a stage-4 job (extract_xvectors.py extract --use-gpu no",
                 "x-vectors of padded batches on cpu vs the CPU's stage-4 path", "GE2E encoder",
                 "stage 5, one fold of finetune_clean", "done in"):
        assert sum(part in line for line in lines) == 1, part
    import json

    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["from_wheels"] == ["kaldiio", "yaml"] and res["agreement"]["max_rel"] < 1e-4
    assert [r["batches"] for r in res["extract"]["runs"]][1] > 1          # the small budget: several batches
    assert res["extract"]["job"]["rc"] == 0 and res["finetune"]["epochs"] == 1 and len(res["train"]) == 2
    assert secs < 60


def test_a_missing_package_without_its_wheel_is_one_line(bare, tmp_path):
    hide, _ = bare
    p, _ = run_check("--dry-run-cpu", "--wheels", str(tmp_path), env_extra={"PYTHONPATH": hide})
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert p.stderr.startswith(f"bench/gpu.sh: kaldiio is not importable here and {tmp_path} has no kaldiio wheel: "
                               f"run 'bench/gpu.sh --pack'")
