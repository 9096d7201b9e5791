"""The local runner (``utils/parallel/run.py``): the jobs on this machine, at most
K at a time, GPUs lent to them one job each (:class:`GpuPool`)."""
from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .joblog import exit_why, log_footer, log_header, report
from .preemption import PREEMPTED
from .request import Request, parse_command_line


def job_env(req: Request, job: int | None, gpus: list[str] | None = None) -> dict[str, str]:
    """Environment of a local job: the caller's, plus thread and GPU limits;
    ``gpus`` are the GPUs the job was given (its CUDA_VISIBLE_DEVICES)."""
    env = dict(os.environ)
    if req.num_threads is not None:
        for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[v] = str(req.num_threads)
    if req.gpu == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job must not grab a GPU
    elif gpus is not None:
        if "CUDA_VISIBLE_DEVICES" not in os.environ:
            # The numbers came from nvidia-smi, which counts in PCI bus order; CUDA
            # counts fastest first unless told otherwise.
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


# ------------------------------------------------------------------- GPU pool
def visible_gpus(env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The GPUs of this machine that jobs may be given, and where that list came
    from: CUDA_VISIBLE_DEVICES when it is set (up to its first negative entry,
    where CUDA stops too), else the ``GPU n:`` lines of ``nvidia-smi -L``. No
    torch here: the runner works without the venv and starts no CUDA context."""
    env = os.environ if env is None else env
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        out = []
        for x in (x.strip() for x in cvd.split(",")):
            if not x or x.startswith("-"):
                break
            out.append(x)
        return out, f"CUDA_VISIBLE_DEVICES='{cvd}'"
    try:
        p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return [], "no CUDA_VISIBLE_DEVICES and no nvidia-smi"
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"no CUDA_VISIBLE_DEVICES, and nvidia-smi -L failed ({e})"
    if p.returncode != 0:
        why = (p.stdout + p.stderr).strip().splitlines()
        return [], f"no CUDA_VISIBLE_DEVICES, and nvidia-smi -L failed ({why[0] if why else f'code {p.returncode}'})"
    return re.findall(r"^GPU (\d+):", p.stdout, flags=re.M), "nvidia-smi -L"


def gpu_lock_dir() -> Path:
    """Where the per-GPU lock files live (PYXV_GPU_LOCK_DIR, else one folder per
    user in the temporary directory)."""
    d = os.environ.get("PYXV_GPU_LOCK_DIR")
    return Path(d) if d else Path(tempfile.gettempdir()) / f"pyxv-gpu-locks-{os.getuid()}"


class GpuPool:
    """GPUs lent to local jobs, each to one job at a time. Every GPU lent is
    also held by a lock on its own file (flock, released by the kernel when the
    runner ends, however it ends), so two runners on this machine -- stage 5
    runs two side by side -- never give out the same GPU at once."""

    def __init__(self, gpus: list[str], lock_dir: Path):
        self.free = list(gpus)
        self.lock_dir = lock_dir
        lock_dir.mkdir(parents=True, exist_ok=True)

    def _lock(self, gpu: str):
        fh = open(self.lock_dir / (re.sub(r"[^\w.-]", "_", gpu) + ".lock"), "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:   # another runner's job has it
            fh.close()
            return None
        return fh

    def take(self, n: int) -> list[tuple[str, object]] | None:
        """``n`` GPUs with their locks, or None when fewer are free now."""
        got = []
        for g in self.free:
            if len(got) == n:
                break
            fh = self._lock(g)
            if fh is not None:
                got.append((g, fh))
        if len(got) < n:
            self.give_back(got, returned=False)
            return None
        for g, _ in got:
            self.free.remove(g)
        return got

    def give_back(self, got: list[tuple[str, object]], returned: bool = True) -> None:
        for g, fh in got:
            fh.close()   # drops the flock
            if returned:
                self.free.append(g)


# ---------------------------------------------------------------- local runner
@dataclass
class _Running:
    job: int | None
    log: str
    proc: subprocess.Popen
    fh: object
    t0: float
    gpus: list = field(default_factory=list)


def run_local(req: Request, prog: str = "run.py") -> int:
    """Run the jobs here, at most ``max_jobs_run`` at a time (default: the
    number of CPUs). Jobs of ``--gpu G`` each get G GPUs of their own from the
    visible ones (:func:`visible_gpus`; :class:`GpuPool`), so at most
    GPUs / G run at once. Returns 0 when every job succeeded, 75 when the
    ones that did not stopped for pre-emption (exit 75), else 1 after
    printing which logs failed (or, before anything starts, why the GPUs asked
    for are not there).

    SIGINT/SIGTERM: nothing new starts, the running jobs get SIGTERM (a
    training job then stops at its next step and writes a checkpoint) and up to
    PYXV_STOP_GRACE seconds (default 120) to end; a second signal, or the end
    of that time, kills them."""
    if req.nodes > 1:
        print(f"{prog}: {req.logfile}: --nodes {req.nodes}: this runner runs jobs on this one machine; several "
              "nodes need the Slurm runner (utils/parallel/slurm.py in cmd.sh)", file=sys.stderr)
        return 1
    limit = req.max_jobs_run or os.cpu_count() or 1
    pool = None
    if req.gpu:
        pool = _gpu_pool(req, prog)
        if pool is None:
            return 1
        limit = min(limit, len(pool.free) // req.gpu)
    return _LocalJobs(req, prog, pool).run(limit)


def _gpu_pool(req: Request, prog: str) -> GpuPool | None:
    """The GPUs of this machine to lend to jobs of ``--gpu G``; None after saying
    why there are fewer than G, or why they cannot be locked."""
    gpus, where = visible_gpus()
    if len(gpus) < req.gpu:
        have = f"only {len(gpus)}" if gpus else "none"
        print(f"{prog}: {req.logfile}: the job asks for {req.gpu} GPU{'s' if req.gpu > 1 else ''} (--gpu "
              f"{req.gpu}) but this machine has {have} ({where})", file=sys.stderr)
        return None
    try:
        return GpuPool(gpus, gpu_lock_dir())
    except OSError as e:
        print(f"{prog}: cannot make the GPU lock folder {gpu_lock_dir()}: {e.strerror}", file=sys.stderr)
        return None


class _LocalJobs:
    """The jobs of one call of the local runner: those waiting, those running,
    those that did not succeed, and the stop a signal asked for."""

    def __init__(self, req: Request, prog: str, pool: GpuPool | None):
        self.req, self.prog, self.pool = req, prog, pool
        self.pending = list(req.jobs)
        self.running: list[_Running] = []
        self.failed: list[tuple[str, str, int]] = []
        self.threads = req.num_threads or 1
        self.host = socket.gethostname()
        # The handler only takes note; the loop acts (a handler runs between any two bytecodes).
        self.stop = {"signum": 0, "count": 0, "deadline": 0.0}
        self.termed: set[int] = set()

    def start(self, job: int | None, gpus: list) -> None:
        req, prog, pool = self.req, self.prog, self.pool
        log = req.logfile_for(job)
        cmd = req.command_for(job)
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "w", encoding="utf-8")
        except OSError as e:
            print(f"{prog}: cannot write log {log}: {e.strerror}", file=sys.stderr)
            self.failed.append((log, "log not writable", 1))
            if pool:
                pool.give_back(gpus)
            return
        fh.write(log_header(cmd))
        fh.flush()
        try:
            proc = subprocess.Popen(["bash", "-c", cmd], stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    env=job_env(req, job, [g for g, _ in gpus] if pool else None),
                                    start_new_session=True)
        except OSError as e:
            fh.write(f"{prog}: cannot start bash: {e}\n")
            fh.write(log_footer(127, 0.0, self.threads, self.host))
            fh.close()
            self.failed.append((log, "could not start", 127))
            if pool:
                pool.give_back(gpus)
            return
        self.running.append(_Running(job, log, proc, fh, time.monotonic(), gpus))

    def finish(self, r: _Running, rc: int) -> None:
        elapsed = time.monotonic() - r.t0
        r.fh.flush()
        r.fh.write(log_footer(rc, elapsed, self.threads, self.host))
        r.fh.close()
        if self.pool:
            self.pool.give_back(r.gpus)
        if rc != 0:
            self.failed.append((r.log, exit_why(rc), rc))

    def signal_all(self, sig, skip=()) -> None:
        for r in self.running:
            if r.proc.pid not in skip:
                try:
                    os.killpg(r.proc.pid, sig)
                except ProcessLookupError:
                    pass

    def note_stop(self, signum, _frame) -> None:
        self.stop["signum"] = self.stop["signum"] or signum
        self.stop["count"] += 1

    def stop_running(self) -> None:
        """After a signal: start nothing more, ask the running jobs to stop (SIGTERM, once
        each), and kill them on a second signal or when the grace time is over."""
        stop = self.stop
        for j in self.pending:
            self.failed.append((self.req.logfile_for(j), "not started (interrupted)", 128 + stop["signum"]))
        self.pending.clear()
        if not stop["deadline"]:
            grace = float(os.environ.get("PYXV_STOP_GRACE") or 120)
            stop["deadline"] = time.monotonic() + grace
            print(f"{self.prog}: interrupted (signal {stop['signum']}): asking {len(self.running)} running job(s) "
                  f"to stop (SIGTERM) and waiting up to {grace:g} s for them to end (a training job "
                  "writes a checkpoint); signal again to kill them now", file=sys.stderr, flush=True)
        self.signal_all(signal.SIGTERM, skip=self.termed)
        self.termed.update(r.proc.pid for r in self.running)
        if stop["count"] > 1 or time.monotonic() > stop["deadline"]:
            self.signal_all(signal.SIGKILL)

    def run(self, limit: int) -> int:
        """Start jobs while fewer than ``limit`` run (and GPUs are free), wait for them, report."""
        req, pool, stop = self.req, self.pool, self.stop
        old = {s: signal.signal(s, self.note_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            delay = 0.005
            while self.pending or self.running:
                if stop["signum"]:
                    self.stop_running()
                while self.pending and len(self.running) < limit and not stop["signum"]:
                    gpus = pool.take(req.gpu) if pool else []
                    if gpus is None:
                        break   # the GPUs are busy (maybe with another runner's jobs): wait
                    self.start(self.pending.pop(0), gpus)
                done = [(r, r.proc.poll()) for r in self.running]
                done = [(r, rc) for r, rc in done if rc is not None]
                for r, rc in done:
                    self.running.remove(r)
                    self.finish(r, rc)
                if done:
                    delay = 0.005
                elif self.running or self.pending:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        order = {req.logfile_for(j): i for i, j in enumerate(req.jobs)}
        self.failed.sort(key=lambda f: order.get(f[0], 0))
        rc = report(self.prog, self.failed, len(req.jobs))
        if stop["signum"] and rc != PREEMPTED:
            print(f"{self.prog}: interrupted (signal {stop['signum']})", file=sys.stderr)
            return 128 + stop["signum"]
        return rc


def main_local(argv: list[str] | None = None, doc: str = "") -> int:
    prog = "run.py"
    got = parse_command_line(argv, prog, doc)
    return got if isinstance(got, int) else run_local(got[0], prog)
