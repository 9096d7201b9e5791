"""Job runners with Kaldi's interface (``run.pl``/``slurm.pl``), shared pieces.

    runner [--mem 4G] [--num-threads N] [--gpu N] [--time H:M:S] [--max-jobs-run K]
           [--nodes N] [JOB=1:N] log/name.JOB.log command args...

``JOB`` (any variable name: ``TASK=1:4`` works too) is replaced by the job
number in the log path and in the command. The command words are joined the way
Kaldi's ``run.pl`` joins them (a word without whitespace goes in as it is, so a
lone ``\\|`` or ``\\>`` is a pipe or a redirection; a word with whitespace is
quoted) and run with ``bash -c``. Each log starts with ``# <command>`` and
``# Started at <date>`` and ends with ``# Accounting: time=<s> threads=<n>
host=<host>`` and ``# Ended (code <rc>) at <date>, elapsed time <s> seconds``.

``--nodes N`` (an extension) runs the command once on each of N nodes, all
started together (Slurm: ``srun --ntasks-per-node 1`` inside one N-node job);
``--gpu`` and ``--num-threads`` are then per node. Exit status 75 of a job
means "stopped for pre-emption, checkpoint written, run again to resume"
(:data:`PREEMPTED`): the runners report it as such, not as a failure of the
program, and the Slurm runner requeues such a job (``max_attempts``).

This module uses the standard library only: the runners are called by path
from ``cmd.sh`` and must work without the virtual environment.
"""
from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DATE_FMT = "%a %b %d %H:%M:%S %Z %Y"  # what `date` prints, as Kaldi's logs show
_RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+)(?::(\d+))?$")
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


# The pre-emption contract, one place for the runners, the launcher and the trainers:
PREEMPTED = 75   # a job's exit status (EX_TEMPFAIL): stopped for pre-emption, checkpoint written, run again to resume
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)   # what a batch system sends before a time limit or pre-emption
PREEMPTED_MARK_ENV = "PYXV_PREEMPTED_MARK"   # set by pyxv.launch: a file each trainer touches after such a stop


class UsageError(Exception):
    """Bad runner arguments; the message is printed as one line."""


class HelpRequested(Exception):
    """``--help`` was given."""


@dataclass
class Request:
    """A parsed runner call. ``jobs`` lists the job numbers (``[None]`` for a
    single job without a range)."""

    logfile: str
    command: list[str]
    var: str | None = None
    start: int = 1
    end: int = 1
    mem: str | None = None
    num_threads: int | None = None
    gpu: int | None = None
    time: str | None = None
    max_jobs_run: int | None = None
    nodes: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def jobs(self) -> list[int | None]:
        if self.var is None:
            return [None]
        return list(range(self.start, self.end + 1))

    @property
    def is_array(self) -> bool:
        return self.var is not None

    def logfile_for(self, job: int | None) -> str:
        return substitute(self.logfile, self.var, job)

    def command_for(self, job: int | None) -> str:
        # One word is a whole command line (Kaldi would look for a program
        # named after the whole string and fail; this extension does the obvious).
        line = self.command[0] if len(self.command) == 1 else join_command(self.command)
        return substitute(line, self.var, job)


def substitute(text: str, var: str | None, job: int | None) -> str:
    """Replace every occurrence of ``var`` in ``text`` by the job number (as
    Kaldi's run.pl does: a plain text replacement)."""
    if var is None or job is None:
        return text
    return text.replace(var, str(job))


def join_command(words: list[str]) -> str:
    """Join command words into one bash command line, with Kaldi's run.pl rule:
    a word without whitespace goes in as it is (so ``|``, ``>``, ``ark:-|`` keep
    their shell meaning); a word with whitespace is wrapped in double quotes,
    or in single quotes when it holds a double quote."""
    out = []
    for w in words:
        if w and not re.search(r"\s", w):
            out.append(w)
        elif '"' in w:
            out.append(f"'{w}'")
        else:
            out.append(f'"{w}"')
    return " ".join(out)


def _int_opt(name: str, value: str, minimum: int) -> int:
    try:
        v = int(value)
    except ValueError:
        raise UsageError(f"--{name} needs an integer, not '{value}'") from None
    if v < minimum:
        raise UsageError(f"--{name} must be at least {minimum}, not {v}")
    return v


def parse_mem(value: str) -> str:
    """Check a memory amount like ``4G``, ``500M``, ``2048`` (MB); return it
    normalised for sbatch (upper-case unit)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTkmgt]?)[Bb]?", value.strip())
    if not m:
        raise UsageError(f"--mem needs an amount like 4G or 500M, not '{value}'")
    num, unit = m.groups()
    if "." in num:  # sbatch wants integers: go one unit down
        units = "KMGT"
        u = unit.upper() or "M"
        i = units.index(u)
        if i == 0:
            return f"{int(float(num) + 0.999)}K"
        return f"{int(float(num) * 1024 + 0.999)}{units[i - 1]}"
    return num + unit.upper()


def parse_time(value: str) -> str:
    """Check a time limit (``H:M:S``, ``M``, ``D-H:M:S``); return it unchanged."""
    if not _TIME.match(value.strip()):
        raise UsageError(f"--time needs H:M:S (or D-H:M:S), not '{value}'")
    return value.strip()


def parse_args(argv: list[str], prog: str, extra_options: tuple[str, ...] = ()) -> Request:
    """Parse ``[options] [VAR=a:b] logfile command...``.

    Options take ``--name value`` or ``--name=value``. ``extra_options`` names
    runner-specific options (e.g. ``config`` for Slurm) kept in ``Request.extra``.
    """
    args = list(argv)
    opts: dict[str, str] = {}
    known = {"mem", "num-threads", "gpu", "time", "max-jobs-run", "nodes", *extra_options}
    while args and args[0].startswith("--"):
        a = args.pop(0)
        if a == "--":
            break
        if a in ("--help", "-h"):
            raise HelpRequested()
        if "=" in a:
            name, value = a[2:].split("=", 1)
        else:
            name = a[2:]
            if not args:
                raise UsageError(f"option --{name} needs a value")
            value = args.pop(0)
        name = name.replace("_", "-")
        if name not in known:
            raise UsageError(f"unknown option --{name} (known: "
                             + ", ".join("--" + k for k in sorted(known)) + ")")
        opts[name] = value
    req_var = None
    start = end = 1
    if args:
        m = _RANGE.match(args[0])
        if m:
            args.pop(0)
            req_var = m.group(1)
            start = int(m.group(2))
            end = int(m.group(3)) if m.group(3) is not None else start
            if end < start:
                raise UsageError(f"job range {req_var}={start}:{end} ends before it starts")
    if len(args) < 2:
        raise UsageError(f"usage: {prog} [--mem 4G] [--num-threads N] [--gpu N] [--time H:M:S] "
                         "[--max-jobs-run K] [--nodes N] [JOB=1:N] log/name.JOB.log command args...")
    logfile, command = args[0], args[1:]
    if logfile.startswith("--"):
        raise UsageError(f"'{logfile}' where the log file should be: options go before the job range "
                         "and the log file")
    if req_var is not None and end > start and req_var not in logfile:
        raise UsageError(f"{end - start + 1} jobs ({req_var}={start}:{end}) would share one log "
                         f"'{logfile}': put {req_var} in the log path (e.g. log/name.{req_var}.log)")
    req = Request(logfile=logfile, command=command, var=req_var, start=start, end=end)
    if "mem" in opts:
        req.mem = parse_mem(opts["mem"])
    if "num-threads" in opts:
        req.num_threads = _int_opt("num-threads", opts["num-threads"], 1)
    if "gpu" in opts:
        req.gpu = _int_opt("gpu", opts["gpu"], 0)
    if "time" in opts:
        req.time = parse_time(opts["time"])
    if "max-jobs-run" in opts:
        req.max_jobs_run = _int_opt("max-jobs-run", opts["max-jobs-run"], 1)
    if "nodes" in opts:
        req.nodes = _int_opt("nodes", opts["nodes"], 1)
    req.extra = {k: v for k, v in opts.items() if k in extra_options}
    return req


# ------------------------------------------------------------------ log pieces
def now() -> str:
    return time.strftime(DATE_FMT)


def log_header(command: str) -> str:
    return f"# {command}\n# Started at {now()}\n#\n"


def log_footer(rc: int, elapsed: float, threads: int = 1, host: str | None = None) -> str:
    host = host or socket.gethostname()
    secs = int(round(elapsed))
    return (f"# Accounting: time={secs} threads={threads} host={host}\n"
            f"# Ended (code {rc}) at {now()}, elapsed time {secs} seconds\n")


def tail(path: str | os.PathLike, n: int = 5) -> list[str]:
    """The last ``n`` lines a job printed, without the runner's own footer."""
    try:
        with open(path, "rb") as f:
            try:
                f.seek(-16384, os.SEEK_END)
                whole = False
            except OSError:
                f.seek(0)
                whole = True
            lines = f.read().decode(errors="replace").splitlines()
    except OSError as e:
        return [f"(cannot read log: {e.strerror})"]
    if whole and len(lines) >= 2 and lines[1].startswith("# Started at"):
        lines = lines[3:] if len(lines) > 2 and lines[2] == "#" else lines[2:]
    lines = [ln for ln in lines if not (ln.startswith("# Accounting:") or ln.startswith("# Ended (code"))]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines[-n:]


PREEMPTED_WHY = "stopped for pre-emption (exit 75: checkpoint written); run the same command again to resume"


def exit_why(rc: int) -> str:
    """Why a job with exit status ``rc`` (negative: killed by that signal) did not succeed."""
    if rc == PREEMPTED:
        return PREEMPTED_WHY
    return f"exit code {rc}" if rc > 0 else f"killed by signal {-rc}"


def report(prog: str, failed: list[tuple[str, str, int]], total: int) -> int:
    """Print what did not succeed (``(logfile, why, rc)``, in job order) and
    return the runner's exit status: 0 for none, 75 when every one of them
    stopped for pre-emption (rerun to resume), else 1."""
    if not failed:
        return 0
    if all(rc == PREEMPTED for _, _, rc in failed):
        for log, why, _ in failed:
            print(f"{prog}: {log}: {why}", file=sys.stderr)
        return PREEMPTED
    print(failure_summary(prog, [(log, why) for log, why, _ in failed], total), file=sys.stderr)
    return 1


def failure_summary(prog: str, failed: list[tuple[str, str]], total: int, max_shown: int = 10) -> str:
    """Text naming each failed log (``(logfile, why)`` pairs) with its last lines."""
    out = [f"{prog}: {len(failed)} of {total} job{'s' if total != 1 else ''} failed:"]
    for i, (log, why) in enumerate(failed):
        if i >= max_shown:
            rest = ", ".join(f for f, _ in failed[max_shown:])
            out.append(f"  ... and {len(failed) - max_shown} more: {rest}")
            break
        out.append(f"  {log} ({why}); its last lines:")
        out.extend(f"    | {ln}" for ln in tail(log))
    return "\n".join(out)


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
        gpus, where = visible_gpus()
        if len(gpus) < req.gpu:
            have = f"only {len(gpus)}" if gpus else "none"
            print(f"{prog}: {req.logfile}: the job asks for {req.gpu} GPU{'s' if req.gpu > 1 else ''} (--gpu "
                  f"{req.gpu}) but this machine has {have} ({where})", file=sys.stderr)
            return 1
        try:
            pool = GpuPool(gpus, gpu_lock_dir())
        except OSError as e:
            print(f"{prog}: cannot make the GPU lock folder {gpu_lock_dir()}: {e.strerror}", file=sys.stderr)
            return 1
        limit = min(limit, len(gpus) // req.gpu)
    pending = list(req.jobs)
    running: list[_Running] = []
    failed: list[tuple[str, str, int]] = []
    threads = req.num_threads or 1
    host = socket.gethostname()

    def start(job: int | None, gpus: list) -> None:
        log = req.logfile_for(job)
        cmd = req.command_for(job)
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "w", encoding="utf-8")
        except OSError as e:
            print(f"{prog}: cannot write log {log}: {e.strerror}", file=sys.stderr)
            failed.append((log, "log not writable", 1))
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
            fh.write(log_footer(127, 0.0, threads, host))
            fh.close()
            failed.append((log, "could not start", 127))
            if pool:
                pool.give_back(gpus)
            return
        running.append(_Running(job, log, proc, fh, time.monotonic(), gpus))

    def finish(r: _Running, rc: int) -> None:
        elapsed = time.monotonic() - r.t0
        r.fh.flush()
        r.fh.write(log_footer(rc, elapsed, threads, host))
        r.fh.close()
        if pool:
            pool.give_back(r.gpus)
        if rc != 0:
            failed.append((r.log, exit_why(rc), rc))

    def signal_all(sig, skip=()) -> None:
        for r in running:
            if r.proc.pid not in skip:
                try:
                    os.killpg(r.proc.pid, sig)
                except ProcessLookupError:
                    pass

    # The handler only takes note; the loop below acts (a handler runs between any two bytecodes).
    stop = {"signum": 0, "count": 0, "deadline": 0.0}
    termed: set[int] = set()

    def stop_all(signum, _frame):
        stop["signum"] = stop["signum"] or signum
        stop["count"] += 1

    old = {s: signal.signal(s, stop_all) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        delay = 0.005
        while pending or running:
            if stop["signum"]:
                for j in pending:
                    failed.append((req.logfile_for(j), "not started (interrupted)", 128 + stop["signum"]))
                pending.clear()
                if not stop["deadline"]:
                    grace = float(os.environ.get("PYXV_STOP_GRACE") or 120)
                    stop["deadline"] = time.monotonic() + grace
                    print(f"{prog}: interrupted (signal {stop['signum']}): asking {len(running)} running job(s) "
                          f"to stop (SIGTERM) and waiting up to {grace:g} s for them to end (a training job "
                          "writes a checkpoint); signal again to kill them now", file=sys.stderr, flush=True)
                signal_all(signal.SIGTERM, skip=termed)
                termed.update(r.proc.pid for r in running)
                if stop["count"] > 1 or time.monotonic() > stop["deadline"]:
                    signal_all(signal.SIGKILL)
            while pending and len(running) < limit and not stop["signum"]:
                gpus = pool.take(req.gpu) if pool else []
                if gpus is None:
                    break   # the GPUs are busy (maybe with another runner's jobs): wait
                start(pending.pop(0), gpus)
            done = [(r, r.proc.poll()) for r in running]
            done = [(r, rc) for r, rc in done if rc is not None]
            for r, rc in done:
                running.remove(r)
                finish(r, rc)
            if done:
                delay = 0.005
            elif running or pending:
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    order = {req.logfile_for(j): i for i, j in enumerate(req.jobs)}
    failed.sort(key=lambda f: order.get(f[0], 0))
    rc = report(prog, failed, len(req.jobs))
    if stop["signum"] and rc != PREEMPTED:
        print(f"{prog}: interrupted (signal {stop['signum']})", file=sys.stderr)
        return 128 + stop["signum"]
    return rc


def main_local(argv: list[str] | None = None, doc: str = "") -> int:
    prog = "run.py"
    try:
        # --config is accepted (and ignored) so that a cmd.sh line can switch
        # between this runner and slurm.py by the program name alone.
        req = parse_args(sys.argv[1:] if argv is None else argv, prog, extra_options=("config",))
    except HelpRequested:
        print(doc.strip())
        return 0
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    return run_local(req, prog)



# ---------------------------------------------------------------- Slurm runner
SLURM_DEFAULTS = {
    "partition": "",
    "gpu_partition": "",
    "gpu_gres": "gpu:{n}",
    "gpus_per_node": "",
    "cpus_per_gpu": "",
    "mem_per_cpu": "",
    "mem_per_gpu": "",
    "time": "",
    "gpu_time": "",
    "max_attempts": "1",
    "gpu_max_attempts": "3",
    "signal": "USR1@300",
    "net_interface": "",
    "rdzv_timeout": "300",
    "account": "",
    "qos": "",
    "extra": "",
    "poll_seconds": "2",
    "status_grace_seconds": "10",
}
_SIGNAL = re.compile(r"^(?:SIG)?([A-Z0-9]+)@(\d+)$")
# squeue reasons of a pending job that can never start as submitted (Slurm accepts
# such jobs unless EnforcePartLimits is set, and leaves them pending for ever).
_NEVER_STARTS = re.compile(r"^(Partition(Node|Time)Limit|PartitionConfig|BadConstraints|Invalid(Account|QOS)"
                           r"|QOSMax\w*PerJob\w*|AssocMax\w*PerJob\w*|MaxCpuPerAccount)$")


def read_slurm_config(path: str | os.PathLike | None) -> dict[str, str]:
    """Read ``key = value`` lines (``#`` starts a comment) into the settings
    the Slurm runner knows; an unknown key is an error naming the line."""
    conf = dict(SLURM_DEFAULTS)
    if path is None:
        return conf
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read config {path}: {e.strerror}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise UsageError(f"{path}:{lineno}: expected 'key = value', got '{line}'")
        k, v = (x.strip() for x in line.split("=", 1))
        if k not in SLURM_DEFAULTS:
            raise UsageError(f"{path}:{lineno}: unknown setting '{k}' (known: {', '.join(SLURM_DEFAULTS)})")
        conf[k] = v
    for k in ("poll_seconds", "status_grace_seconds"):
        try:
            if float(conf[k]) <= 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"{path}: {k} must be a positive number, not '{conf[k]}'") from None
    for k, least in (("max_attempts", 1), ("gpu_max_attempts", 1), ("rdzv_timeout", 1), ("gpus_per_node", 1),
                     ("cpus_per_gpu", 1)):
        if conf[k] and not (conf[k].isdigit() and int(conf[k]) >= least):
            raise UsageError(f"{path}: {k} must be an integer of at least {least}, not '{conf[k]}'")
    if "{n}" not in conf["gpu_gres"]:
        raise UsageError(f"{path}: gpu_gres must contain {{n}} (e.g. gpu:{{n}}), not '{conf['gpu_gres']}'")
    if conf["signal"] and not _SIGNAL.match(conf["signal"]):
        raise UsageError(f"{path}: signal must be SIGNAL@SECONDS (e.g. USR1@300) or empty, not '{conf['signal']}'")
    if conf["net_interface"] and not re.fullmatch(r"[\w.:-]+", conf["net_interface"]):
        raise UsageError(f"{path}: net_interface must be an interface name (e.g. ib0), not '{conf['net_interface']}'")
    return conf


def max_attempts(req: Request, conf: dict[str, str]) -> int:
    """How many times a job stopped for pre-emption may run in all (its class's setting)."""
    return int(conf["gpu_max_attempts"] if (req.gpu or 0) > 0 else conf["max_attempts"])


def cpus_per_task(req: Request, conf: dict[str, str]) -> int | None:
    """CPUs of one task (one per node): the job's --num-threads, or for GPU jobs
    ``cpus_per_gpu`` x GPUs when the config sets it."""
    if (req.gpu or 0) > 0 and conf["cpus_per_gpu"]:
        return req.gpu * int(conf["cpus_per_gpu"])
    return req.num_threads


def sbatch_options(req: Request, conf: dict[str, str], name: str, out_pattern: str) -> list[str]:
    """The sbatch flags of one array submission (a multi-node job: every array
    task gets ``req.nodes`` nodes, one task on each; CPUs, GPUs and --mem per node)."""
    jobs = req.jobs
    a, b = (1, 1) if jobs == [None] else (jobs[0], jobs[-1])
    array = f"{a}-{b}" + (f"%{req.max_jobs_run}" if req.max_jobs_run else "")
    # append: a requeued attempt must not truncate the output of the ones before it
    opts = ["--parsable", f"--array={array}", f"--job-name={name}", f"--output={out_pattern}", "--open-mode=append",
            f"--chdir={os.getcwd()}", "--export=ALL"]
    gpu = req.gpu or 0
    partition = conf["gpu_partition"] if gpu > 0 and conf["gpu_partition"] else conf["partition"]
    if partition:
        opts.append(f"--partition={partition}")
    if req.nodes > 1:
        opts += [f"--nodes={req.nodes}", "--ntasks-per-node=1"]
    cpus = cpus_per_task(req, conf)
    if cpus:
        opts.append(f"--cpus-per-task={cpus}")
    if req.mem:
        opts.append(f"--mem={req.mem}")
    elif gpu > 0 and conf["mem_per_gpu"]:
        opts.append(f"--mem-per-gpu={conf['mem_per_gpu']}")
    elif conf["mem_per_cpu"]:
        opts.append(f"--mem-per-cpu={conf['mem_per_cpu']}")
    if gpu > 0:
        opts.append(f"--gres={conf['gpu_gres'].format(n=gpu)}")
    t = req.time or (conf["gpu_time"] if gpu > 0 else "") or conf["time"]
    if t:
        opts.append(f"--time={t}")
    if max_attempts(req, conf) > 1:
        # B: the warning goes to the batch script, which passes it on and requeues.
        opts.append("--requeue")
        if conf["signal"]:
            sig, secs = _SIGNAL.match(conf["signal"]).groups()
            opts.append(f"--signal=B:{sig}@{secs}")
    if conf["account"]:
        opts.append(f"--account={conf['account']}")
    if conf["qos"]:
        opts.append(f"--qos={conf['qos']}")
    opts.extend(shlex.split(conf["extra"]))
    return opts


def slurm_names(req: Request) -> tuple[Path, str]:
    """(q/ folder beside the logs, base name of the submission's files)."""
    log = Path(req.logfile)
    base = log.name
    if req.var:
        base = base.replace("." + req.var, "").replace(req.var, "")
    if base.endswith(".log"):
        base = base[:-4]
    return log.parent / "q", base or "job"


def batch_script(req: Request, qdir: Path, base: str, conf: dict[str, str] | None = None) -> str:
    """The bash script each array task runs: picks its command and log by
    SLURM_ARRAY_TASK_ID, writes the same log header/footer as the local runner
    (each requeued attempt appends a header and footer of its own), and leaves
    ``<exit code> <attempt>`` in ``q/<base>.<task>.status`` once the job is over.

    SIGUSR1 and SIGTERM are passed on to the job (with ``--nodes N``, through
    srun to every node) and waited for. The job is requeued (``scontrol requeue``,
    while attempts remain) when it exits 75, or fails after a SIGUSR1 (the
    ``--signal`` warning before the time limit, or ``scancel --signal=USR1
    --batch``). After a SIGTERM (scancel, time limit, Slurm's own pre-emption)
    it is not: a failure then leaves no status, and the runner asks Slurm what
    happened."""
    conf = conf or SLURM_DEFAULTS
    threads = req.num_threads or 1
    attempts = max_attempts(req, conf)
    lines = ["#!/usr/bin/env bash",
             f"# Written by utils/parallel/slurm.py for: {join_command(sys.argv)}" if sys.argv else "#",
             "task=${SLURM_ARRAY_TASK_ID:?not run as a Slurm array task}",
             'case "$task" in']
    for j in req.jobs:
        key = 1 if j is None else j
        lines.append(f"  {key}) log={shlex.quote(os.path.abspath(req.logfile_for(j)))}; "
                     f"cmd={shlex.quote(req.command_for(j))} ;;")
    lines += ['  *) echo "no job $task in this array" >&2; exit 2 ;;', "esac"]
    if req.num_threads:
        lines.append(f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads}")
    if req.gpu == 0:
        lines.append('export CUDA_VISIBLE_DEVICES=""')
    if conf["net_interface"]:
        lines.append(f"export PYXV_NET_IFNAME={conf['net_interface']}")
    if conf["rdzv_timeout"]:
        lines.append(f"export PYXV_RDZV_TIMEOUT={conf['rdzv_timeout']}")
    status = shlex.quote(str(qdir.resolve() / base))
    if req.nodes > 1:
        # One task per node; srun passes signals on to every process of the step.
        # srun no longer takes --cpus-per-task from the job (Slurm 22.05): say it.
        cpus = cpus_per_task(req, conf)
        run = (f"srun --nodes={req.nodes} --ntasks={req.nodes} --ntasks-per-node=1 "
               + (f"--cpus-per-task={cpus} " if cpus else "")
               + '--kill-on-bad-exit=1 bash -c "$cmd" >> "$log" 2>&1 < /dev/null &')
        target = '"$child"'
    else:
        # A session of its own: the signal goes to the job's process group, not to this script.
        run = 'setsid bash -c "$cmd" >> "$log" 2>&1 < /dev/null &'
        target = '-"$child"'
    lines += [
        f"max_attempts={attempts}",
        "attempt=$(( ${SLURM_RESTART_COUNT:-0} + 1 ))",
        'mkdir -p "$(dirname "$log")"',
        '[ "$attempt" -gt 1 ] || : > "$log"   # a requeued attempt appends to the log of the ones before',
        'about=; [ "$max_attempts" -eq 1 ] && [ "$attempt" -eq 1 ] || '
        'about=" (attempt $attempt of at most $max_attempts, Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST)"',
        '{ printf "# %s\\n" "$cmd"; echo "# Started at $(date)$about"; echo "#"; } >> "$log"',
        "sig=; nsig=0; child=",
        f'forward() {{ nsig=$((nsig + 1)); sig=${{sig:-$1}}; [ -z "$child" ] || kill -s "$1" -- {target} 2>/dev/null; }}',
        "trap 'forward USR1' USR1",
        "trap 'forward TERM' TERM",
        "t0=$(date +%s)",
        run,
        "child=$!",
        f'[ -z "$sig" ] || kill -s "$sig" -- {target} 2>/dev/null   # a signal that came before the start',
        '# wait returns early when a signal is trapped: wait again until the job itself has ended',
        'while :; do n=$nsig; wait "$child"; rc=$?; [ "$n" = "$nsig" ] && break; done',
        "t=$(( $(date +%s) - t0 ))",
        f'echo "# Accounting: time=$t threads={threads} host=$(hostname)" >> "$log"',
        'ended="# Ended (code $rc) at $(date), elapsed time $t seconds"',
        'if [ "$sig" != TERM ] && [ "$attempt" -lt "$max_attempts" ] '
        '&& { [ "$rc" = 75 ] || { [ "$sig" = USR1 ] && [ "$rc" != 0 ]; }; }; then',
        '  echo "$ended; stopped for pre-emption: requeued as attempt $((attempt + 1))" >> "$log"',
        "  trap 'exit \"$rc\"' USR1 TERM   # the requeue ends this script, with no status written",
        '  if scontrol requeue "$SLURM_JOB_ID" >> "$log" 2>&1; then sleep 300 & wait $!; exit "$rc"; fi',
        '  echo "# scontrol requeue $SLURM_JOB_ID failed: the job ends here" >> "$log"',
        'elif [ "$sig" = TERM ] && [ "$rc" != 0 ] && [ "$rc" != 75 ]; then',
        '  # Slurm is ending the job (scancel, time limit, pre-emption): no status; the runner asks Slurm why.',
        '  echo "$ended (after SIGTERM)" >> "$log"; exit "$rc"',
        "else",
        '  echo "$ended" >> "$log"',
        "fi",
        f'echo "$rc $attempt" > {status}."$task".status.tmp && mv {status}."$task".status.tmp {status}."$task".status',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def job_shape(req: Request, conf: dict[str, str]) -> str:
    """What one job asks Slurm for, in words (for a refused or stuck submission)."""
    gpus = f" and {conf['gpu_gres'].format(n=req.gpu)}" if (req.gpu or 0) > 0 else ""
    return f"{req.nodes} node(s) with {cpus_per_task(req, conf) or 1} CPU(s){gpus} each"


def partition_summary(conf: dict[str, str], gpu: int) -> str:
    """What the job's partition offers, from sinfo (for a refused submission)."""
    partition = conf["gpu_partition"] if gpu > 0 and conf["gpu_partition"] else conf["partition"]
    cmd = ["sinfo", "-h", "-o", "%P|%D|%N|%c|%m|%G"] + (["-p", partition] if partition else [])
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    rows = [r.split("|") for r in p.stdout.split() if r.count("|") == 5]
    if not partition:
        rows = [r for r in rows if r[0].endswith("*")] or rows   # the default partition
    if not rows:
        return ""
    name = rows[0][0].rstrip("*")
    parts = [f"{n} node{'s' if n != '1' else ''} ({nodes}) with {c} CPUs, {m} MB, GPUs/gres {g}"
             for _, n, nodes, c, m, g in rows]
    return f"partition {name} has " + "; ".join(parts)


def slurm_job_states(job_id: str) -> dict[str, str]:
    """Task key -> 'STATE (reason)' of an array job, from scontrol (while Slurm
    still remembers the job: MinJobAge, 300 s by default)."""
    try:
        p = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in p.stdout.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "JobState" in f:
            reason = f.get("Reason", "None")
            out[f.get("ArrayTaskId", "1")] = f["JobState"] + (f" ({reason})" if reason not in ("None", "") else "")
    return out


def run_slurm(req: Request, conf: dict[str, str], prog: str = "slurm.py") -> int:
    """Submit one sbatch array for all jobs, wait for it (requeued attempts
    included), check each task's exit status; 0 when all succeeded, 75 when the
    others stopped for pre-emption, else 1 after naming the failed logs."""
    gpn = int(conf["gpus_per_node"] or 0)
    if gpn and (req.gpu or 0) > gpn:
        nodes = -(-req.gpu * req.nodes // gpn)
        print(f"{prog}: {req.logfile}: the job asks for {req.gpu} GPUs on each of {req.nodes} node(s) but the "
              f"nodes have {gpn} (gpus_per_node in the Slurm config): ask for {nodes} nodes of at most {gpn} "
              f"(steps/train_xvector.sh --nodes {nodes} --gpus-per-node {req.gpu * req.nodes // nodes})",
              file=sys.stderr)
        return 1
    qdir, base = slurm_names(req)
    qdir.mkdir(parents=True, exist_ok=True)
    for j in req.jobs:
        Path(req.logfile_for(j)).parent.mkdir(parents=True, exist_ok=True)
    keys = [1 if j is None else j for j in req.jobs]
    status = {k: qdir / f"{base}.{k}.status" for k in keys}
    for k, f in status.items():
        f.unlink(missing_ok=True)
        (qdir / f"{base}.{k}.out").unlink(missing_ok=True)   # appended to by each attempt
    script = qdir / f"{base}.sh"
    script.write_text(batch_script(req, qdir, base, conf))
    script.chmod(0o755)
    out_pattern = str((qdir / f"{base}.%a.out").resolve())
    cmd = ["sbatch", *sbatch_options(req, conf, f"pyxv-{base}", out_pattern), str(script)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        print(f"{prog}: sbatch not found: is Slurm installed and on PATH?", file=sys.stderr)
        return 1
    if p.returncode != 0:
        err = " ".join(re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", ln.strip())
                       for ln in p.stderr.strip().splitlines() if ln.strip())
        asked = job_shape(req, conf)
        have = partition_summary(conf, req.gpu or 0)
        print(f"{prog}: {req.logfile}: Slurm refused the job ({asked}): {err}" + (f"; {have}" if have else "")
              + f"\n  command: {join_command(cmd)}", file=sys.stderr)
        return 1
    job_id = p.stdout.strip().split(";")[0]
    (qdir / f"{base}.jobid").write_text(job_id + "\n")
    poll = float(conf["poll_seconds"])
    grace = float(conf["status_grace_seconds"])

    def cancel(signum, _frame):
        subprocess.run(["scancel", job_id], capture_output=True)
        print(f"{prog}: interrupted (signal {signum}); cancelled Slurm job {job_id}", file=sys.stderr)
        sys.exit(128 + signum)

    old = {s: signal.signal(s, cancel) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        last_q = 0.0
        gone_since = None
        warned = False
        attempts_seen: dict[str, int] = {}
        never: dict[str, str] = {}
        while True:
            if all(f.exists() for f in status.values()):
                break
            t = time.monotonic()
            if t - last_q >= poll:
                last_q = t
                try:
                    # RestartCnt: how often the job was requeued (by the batch script or by Slurm)
                    q = subprocess.run(["squeue", "-h", "-j", job_id, "-O",
                                        "JobArrayID:40,State:20,Reason:60,RestartCnt:8"],
                                       capture_output=True, text=True, timeout=60)
                except (OSError, subprocess.TimeoutExpired) as e:
                    q = subprocess.CompletedProcess([], 1, "", str(e))
                if q.returncode == 0 and q.stdout.strip():
                    gone_since = None
                    for row in q.stdout.splitlines():
                        f = row.split()
                        if len(f) < 3:
                            continue
                        tid, state, reason = f[0].replace("[", "").replace("]", ""), f[1], " ".join(f[2:-1])
                        restarts = int(f[-1]) if f[-1].isdigit() else 0
                        if restarts > attempts_seen.get(tid, 0):
                            print(f"{prog}: Slurm job {tid} was requeued; waiting for attempt {restarts + 1}",
                                  file=sys.stderr, flush=True)
                            attempts_seen[tid] = restarts
                        if state == "PENDING" and _NEVER_STARTS.match(reason):
                            never[tid] = reason
                    if never:   # waiting would never end
                        subprocess.run(["scancel", job_id], capture_output=True)
                        break
                elif q.returncode == 0 or "Invalid job id" in q.stderr:
                    gone_since = gone_since or t  # finished; allow for slow file systems
                elif not warned:
                    print(f"{prog}: squeue failed ({q.stderr.strip()}); still waiting for job {job_id}",
                          file=sys.stderr)
                    warned = True
            if gone_since is not None and t - gone_since > grace:
                break
            time.sleep(min(0.25, poll))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    failed: list[tuple[str, str, int]] = []
    if never:
        have = partition_summary(conf, req.gpu or 0)
        asked = job_shape(req, conf)
        for reason in sorted(set(never.values())):
            print(f"{prog}: {req.logfile}: Slurm job {job_id} can never start ({asked}): pending with reason "
                  f"{reason}" + (f"; {have}" if have else "") + "; cancelled it", file=sys.stderr)
        return 1
    slurm_states = None
    for j, k in zip(req.jobs, keys):
        log = req.logfile_for(j)
        try:
            words = status[k].read_text().split()
            rc = int(words[0])
            attempt = int(words[1]) if len(words) > 1 else 1
        except (OSError, ValueError, IndexError):
            out = qdir / f"{base}.{k}.out"
            if slurm_states is None:
                slurm_states = slurm_job_states(job_id)
            state = slurm_states.get(str(k))
            why = (f"no exit status: Slurm job {job_id}_{k} was killed or never ran"
                   + (f" (Slurm: {state})" if state else "") + f", see {out}")
            try:
                extra = [ln for ln in out.read_text(errors="replace").splitlines() if ln.strip()][-3:]
            except OSError:
                extra = []
            failed.append((str(out) if extra and not Path(log).exists() else log, why, 1))
            continue
        if rc != 0:
            why = exit_why(rc)
            if rc == PREEMPTED and attempt > 1:
                why += f" (after {attempt} attempts)"
            failed.append((log, why, rc))
    return report(prog, failed, len(keys))


def main_slurm(argv: list[str] | None = None, doc: str = "") -> int:
    prog = "slurm.py"
    try:
        req = parse_args(sys.argv[1:] if argv is None else argv, prog, extra_options=("config",))
        conf = read_slurm_config(req.extra.get("config"))
    except HelpRequested:
        print(doc.strip())
        return 0
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    return run_slurm(req, conf, prog)
