"""Job runners with Kaldi's interface (``run.pl``/``slurm.pl``), shared pieces.

    runner [--mem 4G] [--num-threads N] [--gpu N] [--time H:M:S] [--max-jobs-run K]
           [JOB=1:N] log/name.JOB.log command args...

``JOB`` (any variable name: ``TASK=1:4`` works too) is replaced by the job
number in the log path and in the command. The command words are joined the way
Kaldi's ``run.pl`` joins them (a word without whitespace goes in as it is, so a
lone ``\\|`` or ``\\>`` is a pipe or a redirection; a word with whitespace is
quoted) and run with ``bash -c``. Each log starts with ``# <command>`` and
``# Started at <date>`` and ends with ``# Accounting: time=<s> threads=<n>
host=<host>`` and ``# Ended (code <rc>) at <date>, elapsed time <s> seconds``.

This module uses the standard library only: the runners are called by path
from ``cmd.sh`` and must work without the virtual environment.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DATE_FMT = "%a %b %d %H:%M:%S %Z %Y"  # what `date` prints, as Kaldi's logs show
_RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+)(?::(\d+))?$")
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


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
    known = {"mem", "num-threads", "gpu", "time", "max-jobs-run", *extra_options}
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
                         "[--max-jobs-run K] [JOB=1:N] log/name.JOB.log command args...")
    logfile, command = args[0], args[1:]
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


def job_env(req: Request, job: int | None) -> dict[str, str]:
    """Environment of a local job: the caller's, plus thread and GPU limits."""
    env = dict(os.environ)
    if req.num_threads is not None:
        for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[v] = str(req.num_threads)
    if req.gpu == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job must not grab a GPU
    return env


# ---------------------------------------------------------------- local runner
@dataclass
class _Running:
    job: int | None
    log: str
    proc: subprocess.Popen
    fh: object
    t0: float


def run_local(req: Request, prog: str = "run.py") -> int:
    """Run the jobs here, at most ``max_jobs_run`` at a time (default: the
    number of CPUs). Returns 0 when every job succeeded, else 1 after printing
    which logs failed."""
    limit = req.max_jobs_run or os.cpu_count() or 1
    pending = list(req.jobs)
    running: list[_Running] = []
    failed: list[tuple[str, str]] = []
    threads = req.num_threads or 1
    host = socket.gethostname()

    def start(job: int | None) -> None:
        log = req.logfile_for(job)
        cmd = req.command_for(job)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "w", encoding="utf-8")
        fh.write(log_header(cmd))
        fh.flush()
        try:
            proc = subprocess.Popen(["bash", "-c", cmd], stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=job_env(req, job),
                                    start_new_session=True)
        except OSError as e:
            fh.write(f"{prog}: cannot start bash: {e}\n")
            fh.write(log_footer(127, 0.0, threads, host))
            fh.close()
            failed.append((log, "could not start"))
            return
        running.append(_Running(job, log, proc, fh, time.monotonic()))

    def finish(r: _Running, rc: int) -> None:
        elapsed = time.monotonic() - r.t0
        r.fh.flush()
        r.fh.write(log_footer(rc, elapsed, threads, host))
        r.fh.close()
        if rc != 0:
            why = f"exit code {rc}" if rc > 0 else f"killed by signal {-rc}"
            failed.append((r.log, why))

    def stop_all(signum, _frame):
        for r in running:
            try:
                os.killpg(r.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for r in running:
            try:
                r.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(r.proc.pid, signal.SIGKILL)
            finish(r, r.proc.wait())
        print(f"{prog}: interrupted (signal {signum}); stopped {len(running)} running job(s)",
              file=sys.stderr)
        sys.exit(128 + signum)

    old = {s: signal.signal(s, stop_all) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        delay = 0.005
        while pending or running:
            while pending and len(running) < limit:
                start(pending.pop(0))
            done = [(r, r.proc.poll()) for r in running]
            done = [(r, rc) for r, rc in done if rc is not None]
            for r, rc in done:
                running.remove(r)
                finish(r, rc)
            if done:
                delay = 0.005
            elif running:
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if failed:
        order = {req.logfile_for(j): i for i, j in enumerate(req.jobs)}
        failed.sort(key=lambda f: order.get(f[0], 0))
        print(failure_summary(prog, failed, len(req.jobs)), file=sys.stderr)
        return 1
    return 0


def main_local(argv: list[str] | None = None, doc: str = "") -> int:
    prog = "run.py"
    try:
        req = parse_args(sys.argv[1:] if argv is None else argv, prog)
    except HelpRequested:
        print(doc.strip())
        return 0
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    return run_local(req, prog)


# ------------------------------------------------------------------- shell bits
def shell_quote(s: str) -> str:
    return shlex.quote(s)
