"""Local job runner (utils/parallel/run.py): Kaldi's run.pl interface."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyxv.parallel.request import join_command

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "utils" / "parallel" / "run.py"


def run(args, cwd, env=None, **kw):
    # Called by path with the system python first in PATH: the runner must not need the venv.
    e = dict(os.environ)
    e.pop("VIRTUAL_ENV", None)
    e["PATH"] = "/usr/bin:/bin"
    e.pop("PYTHONPATH", None)
    if env:
        e.update(env)
    return subprocess.run([str(RUN), *args], cwd=cwd, env=e, capture_output=True, text=True, **kw)


def test_array_substitutes_job_in_logs_and_args(tmp_path):
    p = run(["JOB=1:4", "log/echo.JOB.log", "echo", "job", "JOB", "of", "4", r"|", "tr", "a-z", "A-Z"], tmp_path)
    assert p.returncode == 0, p.stderr
    for j in range(1, 5):
        lines = (tmp_path / f"log/echo.{j}.log").read_text().splitlines()
        assert lines[0] == f"# echo job {j} of 4 | tr a-z A-Z"
        assert lines[1].startswith("# Started at ")
        assert f"JOB {j} OF 4" in lines
        assert re.match(r"# Accounting: time=\d+ threads=1 host=\S+", lines[-2])
        assert re.match(r"# Ended \(code 0\) at .*, elapsed time \d+ seconds", lines[-1])


def test_other_variable_names_and_ranges(tmp_path):
    p = run(["TASK=3:5", "log/t.TASK.log", "echo", "TASK"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "log")) == ["t.3.log", "t.4.log", "t.5.log"]
    assert "5" in (tmp_path / "log/t.5.log").read_text().splitlines()


def test_single_job_and_quoted_words(tmp_path):
    # run.pl quoting: a word with whitespace is one argument; a lone word is a
    # whole command line (pipes inside it work).
    p = run(["log/one.log", "printf", "%s_", "a b", 'say "hi"'], tmp_path)
    assert p.returncode == 0, p.stderr
    assert 'a b_say "hi"_' in (tmp_path / "log/one.log").read_text()
    p = run(["JOB=1:2", "log/w.JOB.log", "echo JOB-x | sed s/x/y/ > out.JOB"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out.2").read_text() == "2-y\n"


def test_failing_job_fails_the_call_and_is_named(tmp_path):
    p = run(["JOB=1:4", "log/f.JOB.log", "echo line-JOB; echo boom-JOB >&2; test JOB -ne 3"], tmp_path)
    assert p.returncode == 1
    assert "1 of 4 jobs failed" in p.stderr
    assert "log/f.3.log (exit code 1)" in p.stderr
    assert "boom-3" in p.stderr  # its last lines are shown
    assert "log/f.2.log" not in p.stderr
    assert (tmp_path / "log/f.3.log").read_text().splitlines()[-1].startswith("# Ended (code 1)")
    # The other jobs ran to the end.
    assert "# Ended (code 0)" in (tmp_path / "log/f.4.log").read_text()


def test_max_jobs_run_serialises(tmp_path):
    # Each job appends start/end marks; with one slot they never interleave.
    cmd = "echo start JOB >> order; sleep 0.2; echo end JOB >> order"
    t0 = time.monotonic()
    p = run(["--max-jobs-run", "1", "JOB=1:3", "log/s.JOB.log", cmd], tmp_path)
    serial = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    marks = (tmp_path / "order").read_text().split("\n")[:-1]
    assert marks == [f"{w} {j}" for j in (1, 2, 3) for w in ("start", "end")]
    assert serial >= 0.6
    (tmp_path / "order").unlink()
    # With three slots the jobs overlap: every job starts before any ends.
    p = run(["--max-jobs-run=3", "JOB=1:3", "log/s.JOB.log", cmd.replace("0.2", "1")], tmp_path)
    assert p.returncode == 0
    marks = (tmp_path / "order").read_text().split("\n")[:-1]
    assert sorted(marks[:3]) == ["start 1", "start 2", "start 3"]


def test_options_reach_the_job(tmp_path):
    p = run(["--num-threads", "3", "--gpu", "0", "--mem", "2G", "--time", "1:00:00", "--config", "conf/slurm.conf",
             "log/env.log",
             "echo omp=$OMP_NUM_THREADS cuda=[${CUDA_VISIBLE_DEVICES-unset}]"], tmp_path,
            env={"CUDA_VISIBLE_DEVICES": "0"})
    assert p.returncode == 0, p.stderr
    text = (tmp_path / "log/env.log").read_text()
    assert "omp=3 cuda=[]" in text and "threads=3" in text
    p = run(["--gpu", "1", "log/env1.log", "echo cuda=[${CUDA_VISIBLE_DEVICES-unset}]"], tmp_path,
            env={"CUDA_VISIBLE_DEVICES": "0"})
    assert "cuda=[0]" in (tmp_path / "log/env1.log").read_text()


@pytest.mark.parametrize("args,msg", [
    (["JOB=1:4", "log/x.log", "true"], "put JOB in the log path"),
    (["JOB=4:1", "log/x.JOB.log", "true"], "ends before it starts"),
    (["--bogus", "1", "log/x.log", "true"], "unknown option --bogus"),
    (["--mem", "lots", "log/x.log", "true"], "--mem needs"),
    (["--max-jobs-run", "0", "JOB=1:2", "log/x.JOB.log", "true"], "at least 1"),
    (["JOB=1:2"], "usage:"),
    (["JOB=1:2", "--mem", "4G", "log/x.JOB.log", "true"], "options go before"),
    (["log/x.log", "--mem"], None),  # a command named --mem is fine: options end at the log
])
def test_bad_arguments(tmp_path, args, msg):
    p = run(args, tmp_path)
    if msg is None:
        return
    assert p.returncode != 0
    assert msg in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "log").exists()  # no work done


def test_join_command_follows_run_pl():
    assert join_command(["a", "|", "b", "x y", 'say "z"']) == "a | b \"x y\" 'say \"z\"'"


def test_help_runs_without_venv(tmp_path):
    p = run(["--help"], tmp_path)
    assert p.returncode == 0 and "JOB=1:N" in p.stdout
    assert sys.executable  # (the runner above ran with /usr/bin/python3)


# ------------------------------------------------------------------ GPU pool
# Jobs write "<job> <CUDA_VISIBLE_DEVICES> <start> <end>" (epoch seconds) to a file of their own.
GPU_JOB = ('s=$(date +%s.%N); sleep {sleep}; e=$(date +%s.%N); '
           'echo "JOB ${{CUDA_VISIBLE_DEVICES-unset}} $s $e ${{CUDA_DEVICE_ORDER-}}" > {out}/JOB')


def gpu_env(tmp_path, **extra):
    """A lock folder of the test's own (other tests or a real recipe may hold the real ones)."""
    return {"PYXV_GPU_LOCK_DIR": str(tmp_path / "locks"), **extra}


def gpu_marks(folder):
    out = []
    for f in sorted(Path(folder).iterdir()):
        job, gpu, s, e, *order = f.read_text().split()
        out.append((job, gpu, float(s), float(e), order))
    return out


def overlap(a, b):
    return a[2] < b[3] and b[2] < a[3]


def test_gpu_jobs_get_a_gpu_each_and_run_gpus_at_a_time(tmp_path):
    (tmp_path / "marks").mkdir()
    p = run(["--gpu", "1", "JOB=1:4", "log/g.JOB.log", GPU_JOB.format(sleep=1, out="marks")], tmp_path,
            env=gpu_env(tmp_path, CUDA_VISIBLE_DEVICES="0,1"))
    assert p.returncode == 0, p.stderr
    marks = gpu_marks(tmp_path / "marks")
    assert len(marks) == 4 and {m[1] for m in marks} == {"0", "1"}
    for i, a in enumerate(marks):
        for b in marks[i + 1:]:
            if overlap(a, b):
                assert a[1] != b[1], f"jobs {a[0]} and {b[0]} shared GPU {a[1]} at the same time"
    # 2 at a time: some pair overlapped, never three jobs at once.
    assert any(overlap(a, b) for i, a in enumerate(marks) for b in marks[i + 1:])
    for t in sorted(m[2] for m in marks):
        assert sum(m[2] <= t < m[3] for m in marks) <= 2
    assert all(m[4] == [] for m in marks)   # the user's CUDA_VISIBLE_DEVICES: their device order kept


def test_two_gpus_per_job(tmp_path):
    (tmp_path / "marks").mkdir()
    p = run(["--gpu", "2", "JOB=1:2", "log/g.JOB.log", GPU_JOB.format(sleep=0.3, out="marks")], tmp_path,
            env=gpu_env(tmp_path, CUDA_VISIBLE_DEVICES="3,5"))
    assert p.returncode == 0, p.stderr
    a, b = gpu_marks(tmp_path / "marks")
    assert sorted(a[1].split(",")) == sorted(b[1].split(",")) == ["3", "5"] and not overlap(a, b)


def test_two_runners_never_share_a_gpu(tmp_path):
    """Stage 5 runs two runners side by side: the lock files keep them off each other's GPU."""
    (tmp_path / "marks").mkdir()
    env = dict(os.environ, PATH="/usr/bin:/bin", **gpu_env(tmp_path, CUDA_VISIBLE_DEVICES="0"))
    procs = [subprocess.Popen([str(RUN), "--gpu", "1", f"JOB={a}:{a + 1}", f"log/{a}.JOB.log",
                               GPU_JOB.format(sleep=0.5, out="marks")], cwd=tmp_path, env=env,
                              stderr=subprocess.PIPE, text=True) for a in (1, 3)]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    marks = gpu_marks(tmp_path / "marks")
    assert len(marks) == 4 and {m[1] for m in marks} == {"0"}
    for i, a in enumerate(marks):
        for b in marks[i + 1:]:
            assert not overlap(a, b), f"jobs {a[0]} and {b[0]} ran on GPU 0 at the same time"


def fake_nvidia_smi(tmp_path, text, rc=0):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    f = bin_dir / "nvidia-smi"
    f.write_text(f"#!/bin/sh\ncat <<'X'\n{text}\nX\nexit {rc}\n")
    f.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def test_gpus_counted_with_nvidia_smi_when_cuda_visible_devices_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (tmp_path / "marks").mkdir()
    path = fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H100 (UUID: GPU-aaa)\n"
                                     "  MIG 1g.10gb Device 0: (UUID: MIG-bbb)\n"
                                     "GPU 1: NVIDIA H100 (UUID: GPU-ccc)")
    p = run(["--gpu", "1", "JOB=1:3", "log/g.JOB.log", GPU_JOB.format(sleep=0.2, out="marks")], tmp_path,
            env=gpu_env(tmp_path, PATH=path))
    assert p.returncode == 0, p.stderr
    marks = gpu_marks(tmp_path / "marks")
    assert {m[1] for m in marks} == {"0", "1"}
    assert all(m[4] == ["PCI_BUS_ID"] for m in marks)   # CUDA numbers them as nvidia-smi does


@pytest.mark.parametrize("gpu,env,smi,msg", [
    ("2", {"CUDA_VISIBLE_DEVICES": "0"}, None, "asks for 2 GPUs (--gpu 2) but this machine has only 1 "
                                               "(CUDA_VISIBLE_DEVICES='0')"),
    ("1", {"CUDA_VISIBLE_DEVICES": ""}, None, "asks for 1 GPU (--gpu 1) but this machine has none "
                                              "(CUDA_VISIBLE_DEVICES='')"),
    ("1", {"CUDA_VISIBLE_DEVICES": "-1"}, None, "has none"),
    ("1", {}, None, "has none (no CUDA_VISIBLE_DEVICES and no nvidia-smi)"),
    ("1", {}, ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver", 9),
     "has none (no CUDA_VISIBLE_DEVICES, and nvidia-smi -L failed (NVIDIA-SMI has failed"),
])
def test_more_gpus_than_the_machine_has_fail_at_once(tmp_path, monkeypatch, gpu, env, smi, msg):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env = gpu_env(tmp_path, **env)
    if smi:
        env["PATH"] = fake_nvidia_smi(tmp_path, *smi)
    elif "CUDA_VISIBLE_DEVICES" not in env:
        # A PATH with python3 alone: no nvidia-smi, even on a machine that has one.
        (tmp_path / "py").mkdir()
        (tmp_path / "py" / "python3").symlink_to(shutil.which("python3", path="/usr/bin:/bin"))
        env["PATH"] = str(tmp_path / "py")
    t0 = time.monotonic()
    p = run(["--gpu", gpu, "JOB=1:2", "log/train.JOB.log", "touch ran.JOB"], tmp_path, env=env)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: log/train.JOB.log: the job asks for "), p.stderr
    assert msg in lines[0]
    assert not (tmp_path / "log").exists() and not list(tmp_path.glob("ran.*"))   # nothing started
    assert time.monotonic() - t0 < 10
