"""A real Slurm (Debian's slurm-wlm 22.05) on this one machine, for the tests of
the Slurm runner: munge (started if not running), slurmctld, and one slurmd per
node. One node is this host under its own name; several nodes are n1, n2, ...,
each a `slurmd -N nK` with a port of its own and %n in its spool, pid and log
paths (machines.md: "Two Slurm nodes on one machine"), all at 127.0.0.1.

    with slurm_cluster(nodes=2) as c:      # c["env"] has SLURM_CONF
        subprocess.run(["srun", "-N2", "hostname"], env=c["env"])

It skips the calling test, saying why, where Slurm is absent and cannot be
installed with apt-get, or where the daemons cannot run (not root); it fails
with the daemons' logs when they start but the nodes never come up. The daemons
are stopped by pid (never by name) when the block ends, however it ends.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "scontrol", "srun", "munged", "munge")


def which(b: str) -> str | None:
    return shutil.which(b) or next((p for p in (f"/usr/sbin/{b}", f"/usr/bin/{b}") if os.path.exists(p)), None)


def ensure_installed() -> str | None:
    """None when the binaries are there (installing them if possible), else why not."""
    if all(which(b) for b in BINARIES):
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
    missing = [b for b in BINARIES if not which(b)]
    return f"still missing after apt-get: {', '.join(missing)}" if missing else None


def munge_works() -> bool:
    try:
        m = subprocess.run([which("munge"), "-n"], capture_output=True, timeout=10)
        if m.returncode != 0:
            return False
        u = subprocess.run([which("unmunge")], input=m.stdout, capture_output=True, timeout=10)
        return u.returncode == 0
    except (OSError, subprocess.TimeoutExpired, TypeError):
        return False


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def mem_mb() -> int:
    """RealMemory of a node: `free -m` total less 2 GB for the system."""
    out = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout
    total = int(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Mem:")))
    return max(512, total - 2048)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
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


def _start_munge() -> int | None:
    """Start munged when no working one answers; its pid (to stop it after), or None."""
    if munge_works():
        return None
    subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge"], check=True)
    p = subprocess.run(["runuser", "-u", "munge", "--", which("munged")], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot start munged: {p.stderr.strip()}")
    pidfile = Path("/run/munge/munged.pid")
    for _ in range(50):
        if pidfile.exists() and munge_works():
            break
        time.sleep(0.1)
    return int(pidfile.read_text()) if pidfile.exists() else None


@contextlib.contextmanager
def slurm_cluster(nodes: int = 1, cpus: int | None = None):
    """A running Slurm of ``nodes`` nodes of ``cpus`` CPUs each (default: this
    machine's); yields {"env", "tmp", "conf", "nodes"}."""
    why = ensure_installed()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("the test Slurm runs slurmd as root (SlurmdUser=root); run the tests as root or in CI")
    started_munged = _start_munge()
    tmp = Path(tempfile.mkdtemp(prefix="pyxv-slurm-"))
    procs: list[subprocess.Popen] = []
    try:
        host = socket.gethostname()
        cpus = cpus or os.cpu_count()
        ports = free_ports(1 + nodes)
        (tmp / "state").mkdir()
        if nodes == 1:
            names = [host]
            node_lines = (f"SlurmdPort={ports[1]}\n"
                          f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb()} State=UNKNOWN\n")
            daemons = [("slurmd", [which("slurmd"), "-D"])]
        else:
            names = [f"n{i + 1}" for i in range(nodes)]
            node_lines = "".join(f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs={cpus} "
                                 f"RealMemory={mem_mb()} State=UNKNOWN\n" for n, p in zip(names, ports[1:]))
            daemons = [(f"slurmd.{n}", [which("slurmd"), "-D", "-N", n]) for n in names]
        for n in names:
            (tmp / f"spool.{n}").mkdir()
        conf = tmp / "slurm.conf"
        # cred_expire=5: a requeued job may start again after 5 s (default 120);
        # sched_interval=1: the scheduler looks at pending jobs every second (default 60).
        conf.write_text(f"""\
ClusterName=pyxvtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool.%n
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.%n.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.%n.log
{node_lines}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        env = dict(os.environ, SLURM_CONF=str(conf))
        for name, cmd in [("slurmctld", [which("slurmctld"), "-D"])] + daemons:
            out = open(tmp / f"{name}.out", "w")
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
            out.close()
        t0 = time.monotonic()
        state = ""
        while time.monotonic() - t0 < 30:
            if any(p.poll() is not None for p in procs):
                break
            s = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, capture_output=True, text=True)
            state = s.stdout.strip()
            if len(state.splitlines()) == nodes and all(ln.endswith(" idle") for ln in state.splitlines()):
                break
            time.sleep(0.3)
        else:
            state += " (timed out)"
        if not (len(state.splitlines()) == nodes and all(ln.endswith(" idle") for ln in state.splitlines())):
            logs = "\n".join(f"--- {f.name}:\n" + f.read_text()[-1500:] for f in sorted(tmp.glob("slurm*.log"))
                             if f.is_file())
            outs = "\n".join(f"--- {f.name}:\n" + f.read_text()[-800:] for f in sorted(tmp.glob("*.out")))
            pytest.fail(f"{nodes}-node Slurm did not come up (sinfo: '{state}'):\n{outs}\n{logs}")
        yield {"env": env, "tmp": tmp, "conf": conf, "nodes": names}
    finally:
        for p in reversed(procs):  # our children: wait() reaps them (a zombie still answers kill 0)
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if started_munged:
            stop_pid(started_munged)
        shutil.rmtree(tmp, ignore_errors=True)
