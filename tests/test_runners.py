"""Local job runner (utils/parallel/run.py): Kaldi's run.pl interface."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyxv import parallel

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
    assert parallel.join_command(["a", "|", "b", "x y", 'say "z"']) == "a | b \"x y\" 'say \"z\"'"


def test_help_runs_without_venv(tmp_path):
    p = run(["--help"], tmp_path)
    assert p.returncode == 0 and "JOB=1:N" in p.stdout
    assert sys.executable  # (the runner above ran with /usr/bin/python3)
