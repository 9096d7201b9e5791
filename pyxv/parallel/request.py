"""A runner call parsed: options, the ``JOB=a:b`` range, the log path and the
command, with ``JOB`` replaced per job as Kaldi's ``run.pl`` replaces it."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

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
    nodes: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def jobs(self) -> list[int | None]:
        if self.var is None:
            return [None]
        return list(range(self.start, self.end + 1))

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


# The options every runner takes: name -> its checker (the Request field is the name with '_').
_OPTIONS = {
    "mem": parse_mem,
    "num-threads": lambda v: _int_opt("num-threads", v, 1),
    "gpu": lambda v: _int_opt("gpu", v, 0),
    "time": parse_time,
    "max-jobs-run": lambda v: _int_opt("max-jobs-run", v, 1),
    "nodes": lambda v: _int_opt("nodes", v, 1),
}


def parse_args(argv: list[str], prog: str, extra_options: tuple[str, ...] = ()) -> Request:
    """Parse ``[options] [VAR=a:b] logfile command...``.

    Options take ``--name value`` or ``--name=value``. ``extra_options`` names
    runner-specific options (e.g. ``config`` for Slurm) kept in ``Request.extra``.
    """
    args = list(argv)
    opts: dict[str, str] = {}
    known = {*_OPTIONS, *extra_options}
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
    for name, parse in _OPTIONS.items():
        if name in opts:
            setattr(req, name.replace("-", "_"), parse(opts[name]))
    req.extra = {k: v for k, v in opts.items() if k in extra_options}
    return req


def parse_command_line(argv: list[str] | None, prog: str, doc: str, check=None):
    """A runner's request from its command line, with what ``check(request)`` returns
    (the Slurm runner reads its config there; it may raise :class:`UsageError` too);
    or the exit status to end with: 0 after ``--help`` (``doc`` printed), 2 after a
    usage error (one line). ``--config`` is accepted by both runners (the local one
    ignores it) so that a cmd.sh line switches runner by the program's name alone."""
    try:
        req = parse_args(sys.argv[1:] if argv is None else argv, prog, extra_options=("config",))
        return req, (check(req) if check else None)
    except HelpRequested:
        print(doc.strip())
        return 0
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
