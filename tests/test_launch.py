"""pyxv.launch: one node's share of a multi-process training (torchrun's agent in
the process): its place in a Slurm step, the outcome as an exit status and one
line (75 when the processes stopped for pre-emption), SIGTERM/SIGUSR1 passed on
to the training processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pyxv import launch

REPO = Path(__file__).resolve().parents[1]

# Two processes; each notes SIGTERM/SIGUSR1 and stops with 75 (the trainer's
# contract), touching the launcher's mark first when MARK is set, then aborting
# as gloo's teardown sometimes does; FAIL=1 makes rank 1 fail with 3 at once.
WORKER = textwrap.dedent("""
    import os, signal, sys, time
    stop = []
    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, lambda n, f: stop.append(n))
    rank = int(os.environ["RANK"])
    print(f"rank {rank} of {os.environ['WORLD_SIZE']} up", flush=True)
    if os.environ.get("FAIL") and rank == 1:
        sys.exit(3)
    for _ in range(600):
        if stop:
            time.sleep(0.3)   # the checkpoint
            if os.environ.get("MARK"):
                open(os.environ["PYXV_PREEMPTED_MARK"], "w").close()
                os.abort()
            sys.exit(75)
        time.sleep(0.05)
""")


def test_outcome():
    assert launch.outcome({0: 75, 1: 75}, 0)[0] == 75
    rc, why = launch.outcome({0: 75, 1: -10}, signal.SIGUSR1)
    assert rc == 138 and why.startswith("stopped by SIGUSR1 (training process rank 0: exit code 75)")
    rc, why = launch.outcome({0: -15, 1: 1}, 0, first=1)
    assert rc == 1 and why == "training process rank 1 failed (exit code 1; its output is above)"
    assert launch.outcome({2: -6}, 0) == (1, "training process rank 2 failed (killed by SIGABRT; its output is "
                                             "above)")


def test_place_in_a_slurm_step_is_checked():
    with pytest.raises(launch.LaunchError, match="must run as a Slurm job step .* not outside Slurm"):
        launch.slurm_place(2, {})
    with pytest.raises(launch.LaunchError, match="not in the batch script"):
        launch.slurm_place(2, {"SLURM_JOB_ID": "7"})
    env = {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NUM_TASKS": "2",
           "SLURM_STEP_NODELIST": "n[1-2]"}
    with pytest.raises(launch.LaunchError, match=r"Slurm job 7 runs this step on 2 node\(s\) \(n\[1-2\]\) but "
                                                 r"--nnodes 3 was asked"):
        launch.slurm_place(3, env)
    with pytest.raises(launch.LaunchError, match="runs 4 tasks on 2 nodes: the launcher needs one task per node"):
        launch.slurm_place(2, dict(env, SLURM_STEP_NUM_TASKS="4"))


def test_rendezvous_port():
    ports = {launch.rendezvous_port(str(j)) for j in range(3000)}
    assert min(ports) >= 10000 and max(ports) < 32768       # below the ephemeral range
    assert launch.rendezvous_port("123") == launch.rendezvous_port("123")
    assert launch.rendezvous_port("123", 1) != launch.rendezvous_port("123", 0)   # a requeued attempt


def _launch(tmp_path, env=None):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    e = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "pyxv.launch", "--nproc-per-node", "2", "--threads-per-proc", "1",
                             str(script)], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _up(p, out: list):
    t0 = time.time()
    while "".join(out).count(" up") < 2:   # the two processes' lines may run into each other
        assert time.time() - t0 < 60 and p.poll() is None, "".join(out)
        out.append(p.stdout.readline())


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_reaches_the_processes_and_75_comes_back(tmp_path, sig):
    p = _launch(tmp_path)
    out = []
    _up(p, out)
    p.send_signal(sig)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 75, err[-2000:]
    assert err.strip().splitlines()[-1] == ("pyxv.launch: this machine: stopped for pre-emption (exit 75: the "
                                            "trainer wrote a checkpoint); run the same command again to resume")


@pytest.mark.slow
def test_the_trainers_mark_proves_the_stop_when_the_status_is_lost(tmp_path):
    """A process that stopped with its checkpoint and then died in teardown (SIGABRT)
    still counts as stopped for pre-emption: the trainer's mark file says so."""
    p = _launch(tmp_path, {"MARK": "1"})
    out = []
    _up(p, out)
    p.send_signal(signal.SIGUSR1)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 75, err[-2000:]
    assert "stopped for pre-emption" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_failing_process_is_named(tmp_path):
    p = _launch(tmp_path, {"FAIL": "1"})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3
    assert err.strip().splitlines()[-1] == ("pyxv.launch: this machine: training process rank 1 failed (exit code 3; "
                                            "its output is above)")


def test_venv_sh_runs_in_the_venv_without_the_set_up(tmp_path):
    """Compute nodes: no espeak-ng or sox on PATH (path.sh would run the set-up for
    them); venv.sh runs the command in the shared .venv all the same."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    p = subprocess.run([str(REPO / "utils/parallel/venv.sh"), "python", "-c",
                        "import sys, pyxv; print(sys.prefix); print(pyxv.__file__)"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    prefix, module = p.stdout.split()
    assert Path(prefix) == REPO / ".venv" and Path(module).is_relative_to(REPO)
    # a tree without .venv: one line saying what to do
    (tmp_path / "utils/parallel").mkdir(parents=True)
    (tmp_path / "utils/parallel/venv.sh").write_bytes((REPO / "utils/parallel/venv.sh").read_bytes())
    (tmp_path / "utils/parallel/venv.sh").chmod(0o755)
    p = subprocess.run([str(tmp_path / "utils/parallel/venv.sh"), "true"], env=env, capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.startswith(f"venv.sh: {tmp_path}/.venv does not exist on ") and "./run.sh" in p.stderr
