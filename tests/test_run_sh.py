"""run.sh: --help, stage ranges (dry run), and bad input rejected before any work.

run.sh is copied with the parts it sources into a temporary folder whose
path.sh/cmd.sh only leave a mark, so the checks touch nothing in the repo and
can tell whether any set-up or stage work started.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from run_sh_sandbox import RUN_SH, fake_steps, recorded_calls
from run_sh_sandbox import sandbox  # noqa: F401  (the fixture: run.sh in a folder of its own)


def stages_in_help() -> list[int]:
    text = RUN_SH.read_text()
    return [int(m) for m in re.findall(r"^if run_stage (\d+) ", text, flags=re.M)]


def run_sh(sandbox: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(sandbox / "run.sh"), *args], cwd=sandbox, capture_output=True,
                          text=True, timeout=60)


def test_help_lists_every_option_and_stage(sandbox):
    p = run_sh(sandbox, "--help")
    assert p.returncode == 0, p.stderr
    text = RUN_SH.read_text().split(". utils/recipe_lib.sh", 1)[0]   # the option lines
    options = re.findall(r"^([a-z][a-z0-9_]*)=", text, flags=re.M)
    assert len(options) > 10
    for name in options:
        assert f"--{name.replace('_', '-')} " in p.stdout, f"--help does not list --{name}"
    stages = stages_in_help()
    assert stages == list(range(len(stages))) and len(stages) >= 8
    for n in stages:
        assert re.search(rf"^\s+{n}\s+\S", p.stdout, flags=re.M)
    assert not (sandbox / "SETUP_STARTED").exists()


@pytest.mark.parametrize("start,stop", [(0, 0), (2, 4), (3, 3), (5, 100), (0, 100)])
def test_dry_run_prints_exactly_the_asked_stages(sandbox, start, stop):
    p = run_sh(sandbox, "--dry-run", "true", "--stage", str(start), "--stop-stage", str(stop))
    assert p.returncode == 0, p.stderr
    ran = [int(m) for m in re.findall(r"^=== stage (\d+):", p.stdout, flags=re.M)]
    assert ran == [n for n in stages_in_help() if start <= n <= stop]
    assert not (sandbox / "SETUP_STARTED").exists()
    assert not (sandbox / "exp" / "stage_times").exists()


@pytest.mark.parametrize("args,msg", [
    (["--bogus-option", "1"], "unknown option --bogus-option"),
    (["--stage"], "needs a value"),
    (["--stage", "3", "--stop-stage", "1"], "--stop-stage 1 is before --stage 3"),
    (["--stage", "two"], "non-negative integer"),
    (["--corpus", "ravdess", "--ravdess-root", "/nonexistent/ravdess"], "/nonexistent/ravdess does not exist"),
    (["--corpus", "ravdess"], "needs --ravdess-root"),
    (["--corpus", "atlantis"], "unknown corpus"),
    (["--dry-run", "maybe"], "true or false"),
    (["--use-gpu", "yes"], "option --use-gpu takes true or false"),
    (["stray"], "unexpected argument"),
    (["--xvector-init", "wav2vec"], "unknown --xvector-init 'wav2vec' (scratch|ge2e)"),
    (["--xvector-adapt-config", "conf/none.yaml"], "conf/none.yaml does not exist"),
])
def test_bad_input_fails_before_any_work(sandbox, args, msg):
    p = run_sh(sandbox, *args)
    assert p.returncode != 0
    assert msg in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "=== stage" not in p.stdout
    assert not (sandbox / "SETUP_STARTED").exists()
    assert not (sandbox / "exp").exists()


@pytest.mark.parametrize("use_gpu,extract_cmd", [(None, "TRAIN_CMD"), ("false", "TRAIN_CMD"), ("true", "CUDA_CMD")])
def test_use_gpu_routes_stages_4_and_5(sandbox, use_gpu, extract_cmd):
    """Stage 4 (x-vector extraction) and stage 5 (emotion systems) get --use-gpu, and
    extraction the GPU runner ($cuda_cmd) with it; fake step scripts record their arguments."""
    fake_steps(sandbox, "extract_xvectors.sh", "train_emotion.sh")
    opts = ["--use-gpu", use_gpu] if use_gpu else []
    p = run_sh(sandbox, "--stage", "4", "--stop-stage", "5", *opts)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = {step: recorded_calls(sandbox, step) for step in ("extract_xvectors.sh", "train_emotion.sh")}
    assert len(calls["extract_xvectors.sh"]) == 6 and len(calls["train_emotion.sh"]) == 16

    def opt(args, name):
        return args[args.index(name) + 1]

    want = use_gpu or "false"
    for args in calls["extract_xvectors.sh"]:
        assert opt(args, "--cmd") == extract_cmd and opt(args, "--use-gpu") == want
    for args in calls["train_emotion.sh"]:
        assert opt(args, "--cmd") == "CUDA_CMD" and opt(args, "--use-gpu") == want


@pytest.mark.parametrize("codes,rc,msg", [
    ({"clean": 75, "clean+aug": 0}, 75, "stopped for pre-emption; run the same command again to resume"),
    ({"clean": 75, "clean+aug": 1}, 1, "failed (see the messages above)"),
])
def test_stage_5_passes_a_preemption_on_and_a_failure_beside_it_wins(sandbox, codes, rc, msg):
    """steps/train_emotion.sh exits 75 when its jobs stopped for pre-emption with a
    checkpoint: stage 5 ends 75 (rerun to resume), not 'failed'; a real failure beside it is a failure."""
    fake_steps(sandbox, "train_emotion.sh",
               script='#!/usr/bin/env bash\nfor a in "$@"; do [ "$prev" = --train-data ] && data=$a; prev=$a; done\n'
                      f'case $data in clean) exit {codes["clean"]} ;; *) exit {codes["clean+aug"]} ;; esac\n')
    p = run_sh(sandbox, "--stage", "5", "--stop-stage", "5")
    assert p.returncode == rc, p.stdout + p.stderr
    assert f"steps/train_emotion_systems.sh: randinit_gemaps {msg}" in p.stderr


def test_stage_7_rebuilds_the_report_only_when_an_input_changed(tmp_path):
    """local/make_report.py --if-stale (stage 7's up-to-date test): a result or data file
    newer than RESULTS.md, a missing report or data root, or a report that leads with
    another corpus rebuild it; its own outputs, exp/stage_times and dot files do not."""
    import importlib.util
    import os
    import sys

    script = RUN_SH.parent / "local" / "make_report.py"
    spec = importlib.util.spec_from_file_location("make_report", script)
    make_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_report)
    exp, data = tmp_path / "exp", tmp_path / "data"
    for f in ("emotion/demo/s_clean/summary.json", "sv/demo/eer.md"):
        (exp / f).parent.mkdir(parents=True, exist_ok=True)
        (exp / f).write_text("{}")
    (data / "demo" / "all").mkdir(parents=True)
    (data / "demo" / "all" / "utt2emo").write_text("u1 happy\n")
    md = exp / "RESULTS.md"
    assert make_report.newer_input(str(md), str(exp), str(data)) == "missing"
    md.write_text("# pyxv results: demo, ravdess\n")
    t = md.stat().st_mtime + 10
    os.utime(md, (t, t))
    assert make_report.newer_input(str(md), str(exp), str(data)) is None
    assert make_report.leads_with(str(md), "demo") and not make_report.leads_with(str(md), "ravdess")
    for f in ("stage_times", "results.csv", "report/cm.png", ".run.lock", "emotion/demo/s_clean/.inputs"):
        (exp / f).parent.mkdir(parents=True, exist_ok=True)
        (exp / f).write_text("x")
        os.utime(exp / f, (t + 5, t + 5))
    assert make_report.newer_input(str(md), str(exp), str(data)) is None
    p = subprocess.run([sys.executable, str(script), "--if-stale", "--corpus", "demo", str(exp), str(md)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "up to date, not rebuilt" in p.stdout, p.stdout + p.stderr
    assert md.stat().st_mtime == t
    for newer in (data / "demo" / "all" / "utt2emo", exp / "sv" / "demo" / "eer.md"):
        os.utime(newer, (t + 5, t + 5))
        assert make_report.newer_input(str(md), str(exp), str(data)) == str(newer)
        os.utime(newer, (t - 5, t - 5))
    assert make_report.newer_input(str(md), str(exp), str(tmp_path / "nodata")) == "missing"


@pytest.mark.parametrize("cuda_cmd,opts,nj", [("utils/parallel/run.py", ["--nj", "4"], "2"),
                                              ("utils/parallel/run.py", ["--nj", "1"], "1"),
                                              ("utils/parallel/run.py", ["--nj", "4", "--emotion-nj", "3"], "3"),
                                              ("utils/parallel/slurm.py", ["--nj", "4"], "0")])
def test_stage_5_shares_the_local_cores_between_the_two_data_settings(sandbox, cuda_cmd, opts, nj):
    """With the local runner each of clean and clean+aug (run side by side) gets half of
    --nj jobs unless --emotion-nj says; a cluster's runner takes one job per fold (0)."""
    fake_steps(sandbox, "train_emotion.sh")
    (sandbox / "cmd.sh").write_text(f"export train_cmd=TRAIN_CMD cuda_cmd={cuda_cmd}\n")
    p = run_sh(sandbox, "--stage", "5", "--stop-stage", "5", *opts)
    assert p.returncode == 0, p.stdout + p.stderr
    calls = recorded_calls(sandbox, "train_emotion.sh")
    assert len(calls) == 16 and {c[c.index("--nj") + 1] for c in calls} == {nj}
    assert {(c[c.index("--system") + 1], c[c.index("--train-data") + 1]) for c in calls} == {
        (s, d) for s in re.findall(r"^(\w+)\t", subprocess.run(
            ["python3", "-m", "pyxv.bin.train_emotion", "--list-systems"], cwd=RUN_SH.parent, capture_output=True,
            text=True, check=True).stdout, flags=re.M) for d in ("clean", "clean+aug")}
