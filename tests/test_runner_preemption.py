"""The local runner (utils/parallel/run.py) and exit status 75, "stopped for
pre-emption, checkpoint written, run again to resume": reported as that, not as a
failure; on SIGTERM/SIGINT the running jobs are asked to stop and given time to
write their checkpoint. --nodes > 1 is refused in one line."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "utils" / "parallel" / "run.py"
PREEMPTED_LINE = "stopped for pre-emption (exit 75: checkpoint written); run the same command again to resume"


def run(args, cwd, env=None, **kw):
    e = dict(os.environ, PATH="/usr/bin:/bin", **(env or {}))   # the runner needs no venv
    return subprocess.run([str(RUN), *args], cwd=cwd, env=e, capture_output=True, text=True, **kw)


def test_exit_75_is_reported_as_preemption(tmp_path):
    p = run(["log/t.log", "echo checkpoint written; exit 75"], tmp_path)
    assert p.returncode == 75
    assert p.stderr.strip() == f"run.py: log/t.log: {PREEMPTED_LINE}"
    assert (tmp_path / "log/t.log").read_text().splitlines()[-1].startswith("# Ended (code 75)")


def test_75_beside_a_real_failure_is_a_failure(tmp_path):
    p = run(["JOB=1:2", "log/t.JOB.log", "if [ JOB = 1 ]; then exit 75; fi; echo broken >&2; exit 3"], tmp_path)
    assert p.returncode == 1
    assert "2 of 2 jobs failed" in p.stderr
    assert f"log/t.1.log ({PREEMPTED_LINE})" in p.stderr and "log/t.2.log (exit code 3)" in p.stderr


def _started(log: Path, p, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if log.exists() and "started" in log.read_text().splitlines():
            return
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    raise AssertionError(f"the job did not start: {log}")


def test_sigterm_lets_a_running_job_checkpoint_and_exit_75(tmp_path):
    """SIGTERM to the runner: the job gets SIGTERM, takes its time (a checkpoint), exits 75;
    the runner waits for it and reports the pre-emption with status 75."""
    job = "trap 'sleep 1; echo checkpoint; exit 75' TERM; echo started; for i in {1..300}; do sleep 0.1; done"
    p = subprocess.Popen([str(RUN), "log/t.log", job], cwd=tmp_path, env=dict(os.environ, PATH="/usr/bin:/bin"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _started(tmp_path / "log/t.log", p)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 75, err
    assert time.time() - t0 < 15
    assert "interrupted (signal 15): asking 1 running job(s) to stop (SIGTERM) and waiting up to 120 s" in err
    assert err.strip().splitlines()[-1] == f"run.py: log/t.log: {PREEMPTED_LINE}"
    lines = (tmp_path / "log/t.log").read_text().splitlines()
    assert "checkpoint" in lines and lines[-1].startswith("# Ended (code 75)")


def test_a_job_that_does_not_stop_is_killed_after_the_grace_time(tmp_path):
    # brace expansion, not $(seq ...): the SIGTERM may land while the loop's list is being
    # made, and a seq killed there ended the loop at once, the job with status 0
    job = "trap 'echo ignoring' TERM; echo started; for i in {1..300}; do sleep 0.1; done"
    p = subprocess.Popen([str(RUN), "--max-jobs-run", "2", "JOB=1:3", "log/t.JOB.log", job], cwd=tmp_path,
                         env=dict(os.environ, PATH="/usr/bin:/bin", PYXV_STOP_GRACE="1"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    for j in (1, 2):
        _started(tmp_path / f"log/t.{j}.log", p)
    t0 = time.time()
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT and time.time() - t0 < 10, err
    assert "log/t.1.log (killed by signal 9)" in err and "log/t.2.log (killed by signal 9)" in err
    assert "log/t.3.log (not started (interrupted))" in err and "3 of 3 jobs failed" in err
    assert err.strip().splitlines()[-1] == "run.py: interrupted (signal 2)"


def test_several_nodes_need_the_slurm_runner(tmp_path):
    p = run(["--nodes", "2", "log/t.log", "true"], tmp_path)
    assert p.returncode == 1 and not (tmp_path / "log").exists()
    assert p.stderr.strip() == ("run.py: log/t.log: --nodes 2: this runner runs jobs on this one machine; several "
                                "nodes need the Slurm runner (utils/parallel/slurm.py in cmd.sh)")
    p = run(["--nodes", "1", "log/t.log", "echo one"], tmp_path)
    assert p.returncode == 0 and "one" in (tmp_path / "log/t.log").read_text()
