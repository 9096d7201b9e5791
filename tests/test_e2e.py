"""End to end: ``./run.sh --demo-size small`` in a copy of the repo reaches RESULTS.md.

The copy holds the working tree's tracked and untracked (not ignored) files, with
``.venv`` linked to this repo's, so nothing is reinstalled. Checks: every stage
runs, Table 2 has all 16 cells (6 systems and 2 references x clean, clean+aug;
weighted F1 and UA), the EER-by-emotion tables of both models and back-ends are there with
their pictures, a second run skips finished work quickly (the report says it is up to
date), and the ``pyxv``
command reproduces the recipe's x-vectors from the wav files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SYSTEMS = ("randinit_gemaps", "randinit_mfcc", "frozen_lr_clean", "frozen_lr_aug", "finetune_clean", "finetune_aug",
           "ref_egemaps_lr", "ref_mfccstats_lr")
# A loaded shared machine may need longer: PYXV_E2E_TIMEOUT=<seconds>.
RUN_TIMEOUT = int(os.environ.get("PYXV_E2E_TIMEOUT", "900"))


def copy_worktree(src: Path, dst: Path) -> None:
    files = subprocess.run(["git", "-C", str(src), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        s = src / f
        if not s.is_file() or f.startswith(".venv"):
            continue
        d = dst / f
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, d)  # keeps modes and mtimes (path.sh compares pyproject.toml's with the venv's stamp)
    os.symlink(src / ".venv", dst / ".venv")


def run_recipe(repo: Path, log: Path) -> tuple[int, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    t0 = time.time()
    with open(log, "w") as f:
        p = subprocess.run(["./run.sh", "--demo-size", "small"], cwd=repo, stdout=f, stderr=subprocess.STDOUT,
                           env=env, timeout=RUN_TIMEOUT)
    return p.returncode, time.time() - t0


@pytest.fixture(scope="module")
def e2e(repo_root, tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (the demo corpus needs it)")
    if not (repo_root / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in the repo (run . ./path.sh once)")
    repo = tmp_path_factory.mktemp("e2e") / "pyxv"
    repo.mkdir()
    copy_worktree(repo_root, repo)
    rc, secs = run_recipe(repo, repo / "run1.log")
    log = (repo / "run1.log").read_text(errors="replace")
    assert rc == 0, f"run.sh failed (exit {rc}) after {secs:.0f}s:\n{log[-6000:]}"
    print(f"\nfirst ./run.sh --demo-size small: {secs:.0f} s")
    return {"repo": repo, "first_secs": secs, "log": log}


def _table2_rows(md: str) -> dict[str, list[str]]:
    sec = md.split("## Emotion recognition")[1].split("###")[0]
    rows = {}
    for line in sec.splitlines():
        m = re.search(r"\(`(\w+)`\)", line)
        if m and line.startswith("|"):
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")][1:]
    return rows


def test_results_md_complete(e2e):
    repo = e2e["repo"]
    md = (repo / "exp/RESULTS.md").read_text()
    rows = _table2_rows(md)
    assert set(SYSTEMS) <= set(rows), rows.keys()
    for s in SYSTEMS:
        assert len(rows[s]) == 4 and "—" not in rows[s], (s, rows[s])   # wF1, UA for clean and clean+aug
        for cell in rows[s]:
            assert 0.0 <= float(cell.split("±")[0]) <= 100.0
    # Table 2 numbers are those of the systems' summary.json.
    summ = json.loads((repo / "exp/emotion/demo/frozen_lr_clean_clean/summary.json").read_text())
    assert rows["frozen_lr_clean"][0].split(" ±")[0] == f"{100 * summ['mean_weighted_f1']:.2f}"
    ref = json.loads((repo / "exp/emotion/demo/ref_egemaps_lr_clean_aug/summary.json").read_text())
    assert rows["ref_egemaps_lr"][2].split(" ±")[0] == f"{100 * ref['mean_weighted_f1']:.2f}"
    assert "**Against the references** (`demo`, mean weighted F1 %): on clean data" in md
    print("\ndemo Table 2 reference rows (wF1 clean, UA clean, wF1 clean+aug, UA clean+aug):\n" + "\n".join(
        f"  {s}: {' | '.join(rows[s])}" for s in ("ref_egemaps_lr", "ref_mfccstats_lr")))
    print(next(line for line in md.splitlines() if line.startswith("**Against the references**")))
    for model in ("clean", "aug"):
        for backend in ("cosine", "plda"):
            assert f"#### demo: ResNet-{model}, {backend} back-end (EER %)" in md
    assert "worst pair:" in md and "synthetic demo voices (espeak-ng)" in md
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md):
        assert (repo / "exp" / png).read_bytes()[:4] == b"\x89PNG"
    stages = [line.split()[0] for line in (repo / "exp/stage_times").read_text().splitlines()]
    assert stages[:8] == [str(i) for i in range(8)]
    assert (repo / "exp/results.csv").is_file()


def test_cli_reproduces_recipe_outputs(e2e, monkeypatch):
    import kaldiio

    repo = e2e["repo"]
    monkeypatch.chdir(repo)  # scp files name their archives relative to the recipe root
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    pyxv = [str(repo / ".venv/bin/python"), "-m", "pyxv.cli"]
    wav = repo / "data/demo/all/wav.scp"
    sub = repo / "sub.scp"
    sub.write_text("".join(wav.read_text().splitlines(keepends=True)[:4]))
    p = subprocess.run(pyxv + ["embed", "exp/xvector_clean", str(sub), str(repo / "cli/xv.ark")], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    mine = dict(kaldiio.load_scp(str(repo / "cli/xv.scp")))
    ref = kaldiio.load_scp(str(repo / "exp/xvector_clean/xvectors_demo/all/xvector.scp"))
    assert len(mine) == 4
    for u, v in mine.items():
        assert np.allclose(v, ref[u], atol=1e-4 * max(1.0, float(np.abs(ref[u]).max()))), u
    a = sub.read_text().splitlines()[0].split(None, 1)[1]
    # Emotion posteriors of test utterances equal those stage 5 wrote, for every kind of system.
    for system in ("frozen_lr_clean_clean", "finetune_aug_clean", "randinit_gemaps_clean", "randinit_mfcc_clean_aug"):
        fold = sorted(p.parent for p in (repo / "exp/emotion/demo" / system).glob("*/posteriors"))[0]
        ref = {line.split()[0]: np.array(line.split()[1:], float)
               for line in (fold / "posteriors").read_text().splitlines()}
        classes = (fold / "classes.txt").read_text().split()
        wav_scp = dict(line.split(None, 1) for line in wav.read_text().splitlines())
        test = repo / f"{system}.scp"
        test.write_text("".join(f"{u} {wav_scp[u]}\n" for u in sorted(ref)[:3]))
        p = subprocess.run(pyxv + ["emotion", str(fold), str(test), "--json"], cwd=repo, env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        res = json.loads(p.stdout)
        assert res["classes"] == classes
        for r in res["results"]:
            got = np.array([r["posteriors"][c] for c in classes])
            assert got.sum() == pytest.approx(1, abs=1e-4)
            assert np.abs(got - ref[r["name"]]).max() < 1e-4, (system, r["name"], got, ref[r["name"]])
    p = subprocess.run(pyxv + ["verify", "exp/xvector_clean", a, a, "--json"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and json.loads(p.stdout)["same"] is True, p.stderr


def test_second_run_skips(e2e):
    repo = e2e["repo"]
    before = (repo / "exp/RESULTS.md").stat().st_mtime
    rc, secs = run_recipe(repo, repo / "run2.log")
    log = (repo / "run2.log").read_text(errors="replace")
    assert rc == 0, log[-4000:]
    print(f"\nsecond ./run.sh --demo-size small: {secs:.0f} s (first {e2e['first_secs']:.0f} s)")
    assert (repo / "exp/RESULTS.md").stat().st_mtime >= before
    assert "exp/RESULTS.md is newer than every result; up to date, not rebuilt" in log, log[-4000:]
    assert secs < 90, f"second run took {secs:.0f}s; stage times:\n" + "\n".join(
        line for line in log.splitlines() if line.startswith("=== stage"))
