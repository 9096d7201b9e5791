"""One node's share of a multi-process training: torchrun's elastic agent, run in
this process, with what a job runner needs around it.

    python -m pyxv.launch --nnodes N --nproc-per-node P [--threads-per-proc T] -m module args...

One node (``--nnodes 1``): ``torchrun --standalone`` (a rendezvous on this machine).
Several nodes: one copy of this command runs on each node as a Slurm job step
task (the Slurm runner's ``--nodes N`` starts them with ``srun --ntasks-per-node 1``)
and starts torchrun's agent with a static rendezvous: ``--node-rank`` is this
node's place in the step's node list, ``--master-addr`` the ``NodeAddr`` of the
step's first node (``scontrol show node``), ``--master-port`` derived from the job
id. A c10d endpoint on a shared hostname timed out on our two-node test cluster
where this worked (machines.md). One task per node running torchrun's agent,
rather than one Slurm task per GPU with env:// initialisation, because the agent
maps LOCAL_RANK to the node's GPUs without Slurm's per-task GPU binding, watches
the node's processes and ends them together, bounds the rendezvous by a timeout
(env:// waits the whole process-group timeout), and is the one-node code path
too. Environment:

    PYXV_MASTER_ADDR   rendezvous address instead of the first node's NodeAddr
    PYXV_MASTER_PORT   rendezvous port instead of the one derived from the job id
    PYXV_NET_IFNAME    network interface of the training traffic: GLOO_SOCKET_IFNAME
                       and NCCL_SOCKET_IFNAME, unless those are set (the Slurm
                       runner exports it from conf/slurm.conf's net_interface)
    PYXV_RDZV_TIMEOUT  seconds the nodes wait for each other (default 300)

Outcome, as an exit status and one line naming the node and the cause:
0 trained; 75 every training process stopped for pre-emption (the trainer's
"checkpoint written, run again to resume"); 128+n stopped by signal n that this
launcher passed on; 1 a process failed, the rendezvous was not reached in time,
or the node's place in the job is not what was asked. SIGTERM and SIGUSR1 are
passed to the training processes (they stop at their next step boundary); they
are not left to torch's agent, which would kill them after its shutdown timeout
and report every outcome as exit status 1.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# PREEMPTED: the trainer's exit status "stopped for pre-emption, checkpoint written,
# run again to resume"; PREEMPTED_MARK_ENV names a file the trainer touches then
# (mark_preempted): proof of the 75 even where a process's exit status was lost
# to gloo's teardown abort.
from pyxv.parallel.preemption import PREEMPTED, PREEMPTED_MARK_ENV, STOP_SIGNALS

PROG = "pyxv.launch"


class LaunchError(Exception):
    """Why this node cannot take part; printed as one line."""


@dataclass
class Place:
    nnodes: int
    node_rank: int = 0
    master_addr: str = ""
    master_port: int = 0
    where: str = "this machine"        # for messages: the job, the node and its name
    addr_from: str = ""                # where master_addr came from


def _scontrol(*args: str) -> str:
    try:
        p = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LaunchError(f"scontrol {' '.join(args)} failed: {e}") from None
    if p.returncode != 0:
        raise LaunchError(f"scontrol {' '.join(args)} failed: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def rendezvous_port(job_id: str, restart: int = 0) -> int:
    """A port for the job's rendezvous, the same on every node without talking:
    10000-32399, below Linux's ephemeral range; a requeued attempt (Slurm's
    restart count) takes the next one, in case the old one lingers."""
    return 10000 + (int(job_id) % 1400) * 16 + restart % 16


def slurm_place(nnodes: int, env=os.environ) -> Place:
    """This node's place in a multi-node Slurm job step, or a LaunchError saying
    why the step does not fit ``nnodes`` (one task on each of nnodes nodes)."""
    job = env.get("SLURM_JOB_ID")
    if not job or "SLURM_STEP_NUM_NODES" not in env:
        raise LaunchError(f"--nnodes {nnodes} must run as a Slurm job step with one task per node (the Slurm "
                          "runner's --nodes N starts it so; cmd.sh selects the runner), not "
                          + ("in the batch script" if job else "outside Slurm"))
    nodes = int(env["SLURM_STEP_NUM_NODES"])
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", nodes))
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    if nodes != nnodes:
        raise LaunchError(f"Slurm job {job} runs this step on {nodes} node(s) ({nodelist}) but --nnodes {nnodes} "
                          f"was asked: the allocation must have {nnodes} nodes")
    if tasks != nodes:
        raise LaunchError(f"Slurm job {job} runs {tasks} tasks on {nodes} nodes: the launcher needs one task per "
                          "node (srun --ntasks-per-node 1)")
    hosts = _scontrol("show", "hostnames", nodelist).split()
    me = env.get("SLURMD_NODENAME", "")
    rank = hosts.index(me) if me in hosts else int(env.get("SLURM_NODEID", "0"))
    place = Place(nnodes, rank, where=f"Slurm job {job} node {rank} of {nnodes} ({me or '?'})")
    if env.get("PYXV_MASTER_ADDR"):
        place.master_addr, place.addr_from = env["PYXV_MASTER_ADDR"], "PYXV_MASTER_ADDR"
    else:
        out = _scontrol("show", "node", "-o", hosts[0])
        m = re.search(r"\bNodeAddr=(\S+)", out)
        if not m:
            raise LaunchError(f"no NodeAddr for {hosts[0]} in 'scontrol show node -o {hosts[0]}'")
        place.master_addr, place.addr_from = m.group(1), f"NodeAddr of {hosts[0]}"
    if env.get("PYXV_MASTER_PORT"):
        place.master_port = int(env["PYXV_MASTER_PORT"])
    else:
        place.master_port = rendezvous_port(job, int(env.get("SLURM_RESTART_COUNT") or 0))
    return place


def torchrun_args(place: Place, nproc: int, timeout: int, program: list[str]) -> list[str]:
    # The agent handles INT/HUP/QUIT; TERM and USR1 (pre-emption) are ours: see _Stopper.
    args = ["--nnodes", str(place.nnodes), "--nproc-per-node", str(nproc), "--max-restarts", "0",
            "--signals-to-handle", "SIGINT,SIGHUP,SIGQUIT", "--monitor-interval", "0.5"]
    if place.nnodes == 1:
        args.append("--standalone")
    else:
        args += ["--node-rank", str(place.node_rank), "--master-addr", place.master_addr,
                 "--master-port", str(place.master_port), "--rdzv-conf", f"timeout={timeout}"]
    return args + program


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the training processes torch's agent
    started; they run in sessions of their own, so a process-group signal misses them)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name in parentheses may hold spaces: the fields after its ')' are fixed
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(d))
    return out


class _Stopped(Exception):
    def __init__(self, signum: int):
        self.signum = signum


class _Stopper:
    """SIGTERM/SIGUSR1: remember the first, pass it to the training processes;
    before there are any (rendezvous), stop at once."""

    def __init__(self):
        self.signum = 0

    def __call__(self, signum, _frame):
        self.signum = self.signum or signum
        pids = children(os.getpid())
        if not pids:
            raise _Stopped(signum)
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _died(c: int) -> str:
    if c < 0:
        try:
            return f"killed by {signal.Signals(-c).name}"
        except ValueError:
            return f"killed by signal {-c}"
    return f"exit code {c}"


def outcome(codes: dict[int, int], stop: int, first: int | None = None) -> tuple[int, str]:
    """(exit status, cause) from the failed processes' exit codes by global rank
    (negative: killed by that signal), the stop signal received (0: none) and
    the rank that failed first (torch's root cause; default the lowest)."""
    if codes and all(c == PREEMPTED for c in codes.values()):
        return PREEMPTED, ("stopped for pre-emption (exit 75: the trainer wrote a checkpoint); "
                           "run the same command again to resume")
    first = min(codes) if first not in codes else first
    c = codes[first]
    died = _died(c)
    if stop and all(x == PREEMPTED or x < 0 or x >= 128 for x in codes.values()):
        name = signal.Signals(stop).name
        return 128 + stop, (f"stopped by {name} (training process rank {first}: {died}); the newest checkpoint "
                            "is kept: run again to resume")
    return (c if 0 < c < 128 else 1), f"training process rank {first} failed ({died}; its output is above)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnodes", type=int, default=1)
    ap.add_argument("--nproc-per-node", type=int, required=True)
    ap.add_argument("--threads-per-proc", type=int,
                    help="CPU threads of each training process (OMP/MKL/OPENBLAS_NUM_THREADS)")
    ap.add_argument("-m", dest="module", help="run this module (python -m) in each process, with the arguments "
                    "that follow")
    ap.add_argument("script", nargs="?", help="or run this script, with the arguments that follow")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything from "-m MODULE" or the script on belongs to the program, as with python itself.
    cut = next((i for i, x in enumerate(argv) if x == "-m" or x == "--" or not x.startswith("-")
                and (i == 0 or argv[i - 1] not in ("--nnodes", "--nproc-per-node", "--threads-per-proc"))),
               len(argv))
    if cut < len(argv) and argv[cut] == "-m":
        cut = min(cut + 2, len(argv))
    elif cut < len(argv) and argv[cut] != "--":
        cut += 1
    a = ap.parse_args(argv[:cut])
    rest = argv[cut:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if a.nnodes < 1 or a.nproc_per_node < 1:
        ap.error("--nnodes and --nproc-per-node must be at least 1")
    if not (a.module or a.script or rest):
        ap.error("no program to run")
    program = (["-m", a.module] if a.module else [a.script] if a.script else []) + rest
    where = "this machine"
    try:
        timeout = int(os.environ.get("PYXV_RDZV_TIMEOUT") or 300)
        place = Place(1) if a.nnodes == 1 else slurm_place(a.nnodes)
        where = place.where
    except (LaunchError, ValueError) as e:
        print(f"{PROG}: {where}: {e}", file=sys.stderr, flush=True)
        return 1
    ifname = os.environ.get("PYXV_NET_IFNAME")
    if ifname:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", ifname)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", ifname)
    if a.threads_per_proc:
        # all three: a runner sets them for the whole job (all its processes' CPUs)
        for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[v] = str(a.threads_per_proc)
    if place.nnodes > 1:
        net = ", ".join(f"{k}={os.environ[k]}" for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
                        if os.environ.get(k)) or "interface: torch's choice"
        print(f"{PROG}: {where}: {a.nproc_per_node} process(es), rendezvous {place.master_addr}:"
              f"{place.master_port} ({place.addr_from}; {net}; timeout {timeout} s)", file=sys.stderr, flush=True)

    fd, mark = tempfile.mkstemp(prefix="pyxv-preempted-")
    os.close(fd)
    os.unlink(mark)
    os.environ[PREEMPTED_MARK_ENV] = mark
    try:
        return _launch(place, a, timeout, program, where, mark)
    finally:
        if os.path.exists(mark):
            os.unlink(mark)


def _launch(place: Place, a, timeout: int, program: list[str], where: str, mark: str) -> int:
    stopper = _Stopper()
    for s in STOP_SIGNALS:
        signal.signal(s, stopper)

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        try:
            run(parse_args(torchrun_args(place, a.nproc_per_node, timeout, program)))
        finally:
            # The outcome is known: a late signal (srun ending the other nodes' tasks) must not change it.
            for s in STOP_SIGNALS:
                signal.signal(s, signal.SIG_IGN)
    except ChildFailedError as e:
        codes = {r: f.exitcode for r, f in e.failures.items()}
        if os.path.exists(mark):
            codes = {r: PREEMPTED for r in codes}
        rc, why = outcome(codes, stopper.signum, e.get_first_failure()[0])
        print(f"{PROG}: {where}: {why}", file=sys.stderr, flush=True)
        return rc
    except _Stopped as e:
        print(f"{PROG}: {where}: stopped by {signal.Signals(e.signum).name} before training started",
              file=sys.stderr, flush=True)
        return 128 + e.signum
    except SignalException as e:   # INT, HUP, QUIT: torch's agent stopped the processes
        print(f"{PROG}: {where}: stopped by {signal.Signals(e.sigval).name}", file=sys.stderr, flush=True)
        return 128 + int(e.sigval)
    except Exception as e:
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        # Rendezvous and store errors (their classes vary between torch versions).
        rdzv = any(k in c.__name__ for c in type(e).__mro__ for k in ("Rendezvous", "DistNetwork", "DistStore",
                                                                     "Timeout"))
        if place.nnodes > 1 and rdzv:
            why = (f"no rendezvous with the other nodes at {place.master_addr}:{place.master_port} "
                   f"({place.addr_from}) within {timeout} s: {type(e).__name__}: {msg}")
        else:
            why = f"torch's launcher failed: {type(e).__name__}: {msg}"
        print(f"{PROG}: {where}: {why}", file=sys.stderr, flush=True)
        return 1
    if stopper.signum:
        print(f"{PROG}: {where}: {signal.Signals(stopper.signum).name} came after training had ended",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
