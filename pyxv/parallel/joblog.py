"""What a runner writes around a job's output (log header and footer, as Kaldi's
logs have them) and what it says of the jobs that did not succeed."""
from __future__ import annotations

import os
import socket
import sys
import time

from .preemption import PREEMPTED

DATE_FMT = "%a %b %d %H:%M:%S %Z %Y"  # what `date` prints, as Kaldi's logs show


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
