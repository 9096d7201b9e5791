"""The Slurm runner (``utils/parallel/slurm.py``): one sbatch array for the jobs,
its settings from ``conf/slurm.conf``, requeued after a stop for pre-emption."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from .joblog import exit_why, report
from .preemption import PREEMPTED
from .request import Request, UsageError, join_command, parse_command_line

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
    job_id = _submit(req, conf, qdir, base, prog)
    if job_id is None:
        return 1
    never = _wait_for_array(job_id, status, conf, prog)
    if never:
        have = partition_summary(conf, req.gpu or 0)
        asked = job_shape(req, conf)
        for reason in sorted(set(never.values())):
            print(f"{prog}: {req.logfile}: Slurm job {job_id} can never start ({asked}): pending with reason "
                  f"{reason}" + (f"; {have}" if have else "") + "; cancelled it", file=sys.stderr)
        return 1
    failed = _unfinished_tasks(req, keys, status, qdir, base, job_id)
    return report(prog, failed, len(keys))


def _submit(req: Request, conf: dict[str, str], qdir: Path, base: str, prog: str) -> str | None:
    """Write the batch script and submit it; the Slurm job id, or None after saying why Slurm refused it."""
    script = qdir / f"{base}.sh"
    script.write_text(batch_script(req, qdir, base, conf))
    script.chmod(0o755)
    out_pattern = str((qdir / f"{base}.%a.out").resolve())
    cmd = ["sbatch", *sbatch_options(req, conf, f"pyxv-{base}", out_pattern), str(script)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        print(f"{prog}: sbatch not found: is Slurm installed and on PATH?", file=sys.stderr)
        return None
    if p.returncode != 0:
        err = " ".join(re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", ln.strip())
                       for ln in p.stderr.strip().splitlines() if ln.strip())
        asked = job_shape(req, conf)
        have = partition_summary(conf, req.gpu or 0)
        print(f"{prog}: {req.logfile}: Slurm refused the job ({asked}): {err}" + (f"; {have}" if have else "")
              + f"\n  command: {join_command(cmd)}", file=sys.stderr)
        return None
    job_id = p.stdout.strip().split(";")[0]
    (qdir / f"{base}.jobid").write_text(job_id + "\n")
    return job_id


def _wait_for_array(job_id: str, status: dict[int, Path], conf: dict[str, str], prog: str) -> dict[str, str]:
    """Wait until every task has left its status file, or Slurm no longer knows the
    job (and the grace for slow file systems is over), or a task waits for ever; the
    tasks that can never start, with squeue's reason (they are cancelled)."""
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
    return never


def _unfinished_tasks(req: Request, keys: list[int], status: dict[int, Path], qdir: Path, base: str,
                      job_id: str) -> list[tuple[str, str, int]]:
    """``(log, why, exit status)`` of each task that did not succeed, from its
    status file or, when it left none, from what Slurm still remembers of it."""
    failed: list[tuple[str, str, int]] = []
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
    return failed


def main_slurm(argv: list[str] | None = None, doc: str = "") -> int:
    prog = "slurm.py"
    got = parse_command_line(argv, prog, doc, check=lambda req: read_slurm_config(req.extra.get("config")))
    return got if isinstance(got, int) else run_slurm(*got, prog)
