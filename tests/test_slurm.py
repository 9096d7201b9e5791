"""Slurm runner (utils/parallel/slurm.py) against a REAL one-node Slurm.

The fixture brings up munge (if not already running), slurmctld and slurmd
from the Debian slurm-wlm package in a temporary folder with its own ports,
waits until `sinfo` shows the node idle, and stops the daemons by pid at the
end (even when a test fails). It skips, saying why, where Slurm is absent and
cannot be installed with apt-get.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pyxv import parallel

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "utils" / "parallel" / "slurm.py"
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged", "munge")

pytestmark = pytest.mark.slurm


def _which(b: str) -> str | None:
    return shutil.which(b) or next((p for p in (f"/usr/sbin/{b}", f"/usr/bin/{b}") if os.path.exists(p)), None)


def _ensure_installed() -> str | None:
    """None when the binaries are there (installing them if possible), else why not."""
    if all(_which(b) for b in BINARIES):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "slurm-wlm/munge are not installed and apt-get is unavailable (not root or no apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]
    try:
        if subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                return f"apt-get install slurm-wlm munge failed: {p.stderr.strip()[-200:]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"apt-get install slurm-wlm munge failed: {e}"
    missing = [b for b in BINARIES if not _which(b)]
    return f"still missing after apt-get: {', '.join(missing)}" if missing else None


def _munge_works() -> bool:
    try:
        m = subprocess.run([_which("munge"), "-n"], capture_output=True, timeout=10)
        if m.returncode != 0:
            return False
        u = subprocess.run([_which("unmunge")], input=m.stdout, capture_output=True, timeout=10)
        return u.returncode == 0
    except (OSError, subprocess.TimeoutExpired, TypeError):
        return False


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _mem_mb() -> int:
    """RealMemory for the node: `free -m` total less 2 GB for the system."""
    out = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout
    total = int(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Mem:")))
    return max(512, total - 2048)


def _stop(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def slurm_cluster():
    why = _ensure_installed()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("the one-node Slurm runs slurmd as root (SlurmdUser=root); run the tests as root or in CI")
    started_munged = None
    if not _munge_works():
        if os.geteuid() != 0:
            pytest.skip("munged is not running and starting it needs root")
        subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge"], check=True)
        p = subprocess.run(["runuser", "-u", "munge", "--", _which("munged")], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot start munged: {p.stderr.strip()}")
        pidfile = Path("/run/munge/munged.pid")
        for _ in range(50):
            if pidfile.exists() and _munge_works():
                break
            time.sleep(0.1)
        started_munged = int(pidfile.read_text()) if pidfile.exists() else None
    tmp = Path(tempfile.mkdtemp(prefix="pyxv-slurm-"))
    procs: list[subprocess.Popen] = []
    try:
        host = socket.gethostname()
        ctld_port, d_port = _free_ports(2)
        (tmp / "state").mkdir()
        (tmp / "spool").mkdir()
        conf = tmp / "slurm.conf"
        conf.write_text(f"""\
ClusterName=pyxvtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={_mem_mb()} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        env = dict(os.environ, SLURM_CONF=str(conf))
        for daemon in ("slurmctld", "slurmd"):
            out = open(tmp / f"{daemon}.out", "w")
            procs.append(subprocess.Popen([_which(daemon), "-D"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
            out.close()
        t0 = time.monotonic()
        state = ""
        while time.monotonic() - t0 < 30:
            if any(p.poll() is not None for p in procs):
                break
            s = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = s.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.3)
        if state != "idle":
            logs = "\n".join(f"--- {f.name}:\n" + f.read_text()[-1500:] for f in sorted(tmp.glob("slurm*.log"))
                             if f.is_file())
            outs = "\n".join(f"--- {f.name}:\n" + f.read_text()[-800:] for f in sorted(tmp.glob("*.out")))
            pytest.fail(f"one-node Slurm did not come up (sinfo state '{state}'):\n{outs}\n{logs}")
        yield {"env": env, "tmp": tmp}
    finally:
        for p in reversed(procs):  # our children: wait() reaps them (a zombie still answers kill 0)
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if started_munged:
            _stop(started_munged)
        shutil.rmtree(tmp, ignore_errors=True)


def slurm_run(cluster, args, cwd, conf_extra=""):
    conf = Path(cwd) / "slurm.conf"
    conf.write_text("partition = debug\npoll_seconds = 0.5\nstatus_grace_seconds = 2\n" + conf_extra)
    return subprocess.run([str(SLURM), "--config", str(conf), *map(str, args)], cwd=cwd, env=cluster["env"],
                          capture_output=True, text=True, timeout=120)


def test_array_of_four_jobs(slurm_cluster, tmp_path):
    p = slurm_run(slurm_cluster, ["--num-threads", 1, "--mem", "300M", "--time", "0:10:00", "--gpu", 0, "JOB=1:4",
                                  "exp/log/a.JOB.log", "echo", "task", "JOB", "cpus=$SLURM_CPUS_PER_TASK",
                                  "array=$SLURM_ARRAY_TASK_ID", "omp=$OMP_NUM_THREADS",
                                  "cuda=[${CUDA_VISIBLE_DEVICES-unset}]", r"|", "tr", "a-z", "A-Z"], tmp_path)
    assert p.returncode == 0, p.stderr
    for j in range(1, 5):
        lines = (tmp_path / f"exp/log/a.{j}.log").read_text().splitlines()
        assert lines[0] == (f"# echo task {j} cpus=$SLURM_CPUS_PER_TASK array=$SLURM_ARRAY_TASK_ID "
                            "omp=$OMP_NUM_THREADS cuda=[${CUDA_VISIBLE_DEVICES-unset}] | tr a-z A-Z")
        assert lines[1].startswith("# Started at ")
        assert f"TASK {j} CPUS=1 ARRAY={j} OMP=1 CUDA=[]" in lines
        assert lines[-2].startswith("# Accounting: time=") and f"host={socket.gethostname()}" in lines[-2]
        assert lines[-1].startswith("# Ended (code 0) at ")
    q = tmp_path / "exp/log/q"
    assert (q / "a.sh").is_file() and (q / "a.jobid").is_file()
    assert sorted(f.name for f in q.glob("a.*.status")) == [f"a.{j}.status" for j in range(1, 5)]


def test_one_failing_task_fails_the_call(slurm_cluster, tmp_path):
    p = slurm_run(slurm_cluster, ["--max-jobs-run", 2, "TASK=1:4", "log/f.TASK.log",
                                  "echo out TASK; echo trouble-TASK >&2; exit $((TASK == 3 ? 7 : 0))"], tmp_path)
    assert p.returncode == 1
    assert "1 of 4 jobs failed" in p.stderr
    assert "log/f.3.log (exit code 7)" in p.stderr and "trouble-3" in p.stderr
    assert "f.1.log" not in p.stderr
    assert (tmp_path / "log/f.3.log").read_text().splitlines()[-1].startswith("# Ended (code 7)")
    assert "# Ended (code 0)" in (tmp_path / "log/f.4.log").read_text()


def test_killed_task_without_status_fails(slurm_cluster, tmp_path):
    # The task's wrapper dies before writing its status (as when Slurm kills it).
    p = slurm_run(slurm_cluster, ["log/k.log", "kill -9 $PPID"], tmp_path)
    assert p.returncode == 1
    assert "no exit status" in p.stderr


def test_sbatch_options_mapping():
    conf = dict(parallel.SLURM_DEFAULTS, partition="cpu", gpu_partition="gpu", gpu_gres="gpu:a100:{n}",
                mem_per_cpu="2G", account="proj", extra="--nice=5 --exclude=n1")
    req = parallel.parse_args(["--gpu", "2", "--num-threads", "4", "--time", "2:00:00", "--max-jobs-run", "3",
                               "JOB=1:8", "log/t.JOB.log", "true"], "slurm.py")
    o = parallel.sbatch_options(req, conf, "pyxv-t", "q/t.%a.out")
    assert "--array=1-8%3" in o and "--partition=gpu" in o and "--gres=gpu:a100:2" in o
    assert "--cpus-per-task=4" in o and "--time=2:00:00" in o and "--mem-per-cpu=2G" in o
    assert "--account=proj" in o and o[-2:] == ["--nice=5", "--exclude=n1"]
    req = parallel.parse_args(["--mem", "1.5G", "--gpu", "0", "log/t.log", "true"], "slurm.py")
    o = parallel.sbatch_options(req, conf, "pyxv-t", "q/t.%a.out")
    assert "--array=1-1" in o and "--partition=cpu" in o and "--mem=1536M" in o
    assert not any(x.startswith("--gres") or x.startswith("--mem-per-cpu") for x in o)


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("partition = x\nnodes = 3\n")
    p = subprocess.run([str(SLURM), "--config", str(bad), "log/x.log", "true"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "bad.conf:2: unknown setting 'nodes'" in p.stderr
    p = subprocess.run([str(SLURM), "--config", str(REPO / "conf/slurm.conf"), "JOB=1:2", "log/x.log", "true"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 2 and "put JOB in the log path" in p.stderr
    assert parallel.read_slurm_config(REPO / "conf/slurm.conf")["gpu_gres"] == "gpu:{n}"


def test_task_cancelled_mid_array_fails_naming_it(slurm_cluster, tmp_path):
    """Task 2 of 3 is cancelled (scancel) while it runs, the others finish: the
    call fails naming that task's Slurm id and its log, and only that one."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("partition = debug\npoll_seconds = 0.5\nstatus_grace_seconds = 2\n")
    p = subprocess.Popen([str(SLURM), "--config", str(conf), "JOB=1:3", "log/c.JOB.log",
                          "if [ JOB = 2 ]; then sleep 60; fi; echo done JOB"], cwd=tmp_path,
                         env=slurm_cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jobid_file = tmp_path / "log/q/c.jobid"
    t0 = time.time()
    while time.time() - t0 < 60:
        if jobid_file.exists() and "Started" in (tmp_path / "log/c.2.log").read_text(errors="replace") \
                if (tmp_path / "log/c.2.log").exists() else False:
            break
        time.sleep(0.2)
    job = jobid_file.read_text().strip()
    subprocess.run(["scancel", f"{job}_2"], env=slurm_cluster["env"], check=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err
    assert "1 of 3 jobs failed" in err and f"Slurm job {job}_2 was killed" in err and "log/c.2.log" in err, err
    assert "c.1.log" not in err and "c.3.log" not in err
    assert "done 3" in (tmp_path / "log/c.3.log").read_text()
