"""One x-vector training over two Slurm nodes, through the recipe's own step:
`steps/train_xvector.sh --nodes 2 --procs-per-node 2` with the Slurm runner on a
REAL two-node Slurm on this machine (tests/slurm_cluster.py: slurmctld and
`slurmd -N n1`, `-N n2`), CPU and gloo, world 4.

- It trains, one launcher per node meeting at n1's NodeAddr, world 4.
- Pre-emption mid-epoch (`scancel --signal=USR1 --batch`, as Slurm's
  `--signal=B:USR1@T` warning): the batch script passes the signal on, the job
  is requeued (attempt 2 appended to the same log) and resumes from its newest
  step checkpoint, ending bit for bit where the uninterrupted run ends.
- 2 nodes x 2 processes and 1 node x 4 processes (local runner) end with the
  same weights, bit for bit.
- Bad input ends in bounded time with one line naming the job and the cause,
  the newest checkpoint intact: --nodes 3 on 2 nodes, GPUs the nodes lack, a
  rendezvous that cannot be reached, a node whose training processes die.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from slurm_cluster import slurm_cluster
from xvector_synth import TINY, make_datadir

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "utils" / "parallel" / "slurm.py"
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _finished(p_out: str, rc: int, exp: Path) -> bool:
    """The training ended well: exit 0, or (as tests/test_ddp.py tolerates) gloo's
    rare teardown abort after final.pt was written and logged, which the step
    reports as a failure with final.pt in place."""
    teardown_abort = ("terminate called without an active exception" in p_out
                      and f"wrote {exp / 'final.pt'}" in p_out and (exp / "final.pt").is_file())
    return rc == 0 or teardown_abort


@pytest.fixture(scope="module")
def cluster():
    with slurm_cluster(nodes=2) as c:
        yield c


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Data, config and runner settings shared by the tests."""
    w = tmp_path_factory.mktemp("mn")
    make_datadir(w / "data", n_spk=4, n_utt=8)
    cfg = copy.deepcopy(TINY)
    # 4 processes x 8 chunks, 2 epochs x 6 steps: 384 chunks; a step checkpoint
    # every 2 steps and a log point (where a stop is agreed) every 2.
    cfg["train"].update(epochs=2, steps_per_epoch=6, batch_size=8, lr=0.005, log_interval=2,
                        checkpoint_interval=2, keep_checkpoints=0)
    (w / "x.yaml").write_text(yaml.safe_dump(cfg))
    settings = ("partition = debug\npoll_seconds = 0.5\nstatus_grace_seconds = 2\nmax_attempts = 3\n"
                "net_interface = lo\n")
    (w / "slurm.conf").write_text(settings + "rdzv_timeout = 60\n")
    (w / "slurm_fast.conf").write_text(settings + "rdzv_timeout = 5\ngpus_per_node = 2\n")
    return w


def step(cluster, work, exp, *opts, conf="slurm.conf", cmd=None, env=None, background=False):
    args = ["steps/train_xvector.sh", "--cmd", cmd or f"{SLURM} --config {work / conf}", "--config",
            str(work / "x.yaml"), *opts, str(work / "data"), str(exp)]
    e = dict(cluster["env"], OMP_NUM_THREADS="1", **(env or {}))
    if background:
        return subprocess.Popen(args, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, cwd=REPO, env=e, capture_output=True, text=True, timeout=180)


def weights(exp: Path) -> dict:
    return torch.load(exp / "final.pt", weights_only=False)["model"]


def same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def wait_for(path: Path, pattern: str, proc, timeout: float = 180) -> re.Match:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        m = re.search(pattern, path.read_text(errors="replace")) if path.exists() else None
        if m:
            return m
        assert proc.poll() is None, f"ended before '{pattern}' showed in {path}: " + "".join(proc.communicate())
        time.sleep(0.1)
    raise AssertionError(f"'{pattern}' did not show in {path} within {timeout} s")


def checkpoint_sums(exp: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (exp / "checkpoints").glob("*.pt")}


@pytest.fixture(scope="module")
def two_nodes(cluster, work):
    """The uninterrupted 2-node x 2-process run (the reference of the other tests)."""
    exp = work / "two_nodes"
    t0 = time.monotonic()
    p = step(cluster, work, exp, "--nodes", "2", "--procs-per-node", "2")
    seconds = time.monotonic() - t0
    print(f"\n2 nodes x 2 processes: {seconds:.1f} s (features through Slurm included)")
    return exp, p, seconds


def test_two_nodes_train_as_one_world_of_four(cluster, work, two_nodes):
    exp, p, _ = two_nodes
    log = (exp / "log" / "train.log").read_text()
    assert _finished(p.stdout + p.stderr + log, p.returncode, exp), p.stdout + p.stderr + log[-3000:]
    # one launcher per node, meeting at n1's NodeAddr over the configured interface
    for k, n in ((0, "n1"), (1, "n2")):
        assert re.search(rf"pyxv.launch: Slurm job \d+ node {k} of 2 \({n}\): 2 process\(es\), rendezvous "
                         r"127\.0\.0\.1:\d+ \(NodeAddr of n1; GLOO_SOCKET_IFNAME=lo", log), log[:3000]
    assert "steps/epoch of 32 chunks (4 process(es) x 8)" in log
    assert "on 2 nodes, 4 process(es)" in p.stdout
    script = (exp / "log" / "q" / "train.sh").read_text()
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=2 --kill-on-bad-exit=1" in script
    assert len(json.loads((exp / "log" / "history.json").read_text())) == 2


def test_preempted_job_is_requeued_and_resumes_bit_identically(cluster, work, two_nodes):
    ref, _, _ = two_nodes
    exp = work / "preempted"
    shutil.copytree(ref / "feats", exp / "feats")
    t0 = time.monotonic()
    p = step(cluster, work, exp, "--nodes", "2", "--procs-per-node", "2", background=True)
    log = exp / "log" / "train.log"
    # mid-epoch 1, once its first step checkpoint is written
    wait_for(log, r"checkpoint \S+epoch_1_step_2\.pt", p)
    job = (exp / "log" / "q" / "train.jobid").read_text().strip()
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=cluster["env"], check=True)
    wait_for(log, r"requeued as attempt 2", p)
    out, err = p.communicate(timeout=300)
    seconds = time.monotonic() - t0
    text = log.read_text()
    codes = re.findall(r"# Ended \(code (\d+)\)", text)
    print(f"\npre-empted and requeued 2-node run: {seconds:.1f} s; exit codes of the attempts: {codes}")
    assert _finished(out + err + text, p.returncode, exp), out + err + text[-4000:]
    # One log, appended: attempt 1 stopped and requeued, attempt 2 resumed from a step checkpoint.
    assert text.startswith("# ") and text.count("# Started at") == 2
    assert re.search(rf"# Started at .* \(attempt 1 of at most 3, Slurm job {job} on n\[1-2\]\)", text)
    m = re.search(r"# Ended \(code (\d+)\) at .*; stopped for pre-emption: requeued as attempt 2", text)
    # 75: the trainer stopped with a checkpoint; 138: a trainer without that contract died of SIGUSR1
    assert m and int(m.group(1)) in (75, 128 + signal.SIGUSR1), text[-4000:]
    assert re.search(rf"# Started at .* \(attempt 2 of at most 3, Slurm job {job} on n\[1-2\]\)", text)
    second = text[text.index("(attempt 2 of"):]
    resumed = re.search(r"resuming from (\S+epoch_\d+_step_\d+\.pt)", second)
    assert resumed, second[-3000:]
    assert "resuming from" in out
    # Bit for bit where the uninterrupted run ended: DDP keeps one gradient-bucket
    # layout for the whole run on CPU (pyxv.train.distributed.wrap_ddp), so the
    # first step after the resume sums each gradient in the same order as it did
    # in the uninterrupted run (with 4 processes the order changes the float sums).
    same_weights(ref, exp)
    print(f"resumed from {Path(resumed.group(1)).name}: final weights bit-identical to the uninterrupted run's")


def test_two_nodes_of_two_equal_one_node_of_four_bit_for_bit(cluster, work, two_nodes):
    """The same seed and global batch on 2 nodes x 2 processes (Slurm) and on
    1 node x 4 processes (local runner): each planned chunk goes to the same rank,
    gloo sums in rank order whatever the nodes, so the weights are the same bits."""
    ref, _, _ = two_nodes
    exp = work / "one_node_of_four"
    shutil.copytree(ref / "feats", exp / "feats")
    t0 = time.monotonic()
    p = step(cluster, work, exp, "--nodes", "1", "--procs-per-node", "4", cmd="utils/parallel/run.py")
    seconds = time.monotonic() - t0
    log = (exp / "log" / "train.log").read_text()
    assert _finished(p.stdout + p.stderr + log, p.returncode, exp), p.stderr + log[-3000:]
    assert "steps/epoch of 32 chunks (4 process(es) x 8)" in log and "resuming from" not in log
    same_weights(ref, exp)
    print(f"\n1 node x 4 processes (local runner): {seconds:.1f} s; weights bit-identical to 2 nodes x 2")


def test_more_nodes_than_the_cluster_has(cluster, work, two_nodes):
    exp = _stopped_copy(two_nodes[0], work / "three")
    before = checkpoint_sums(exp)
    t0 = time.monotonic()
    p = step(cluster, work, exp, "--nodes", "3", "--procs-per-node", "2")
    assert p.returncode == 1 and time.monotonic() - t0 < 60
    # Slurm takes the job (EnforcePartLimits is off, its default) and leaves it pending for
    # ever (reason PartitionConfig or PartitionNodeLimit): the runner cancels it and says so.
    line = next(ln for ln in p.stderr.splitlines() if "can never start" in ln)
    print("\n" + line)
    job = (exp / "log" / "q" / "train.jobid").read_text().strip()
    assert re.match(rf"slurm.py: {re.escape(str(exp))}/log/train.log: Slurm job {job} can never start \(3 node\(s\) "
                    r"with 2 CPU\(s\) each\): pending with reason Partition(NodeLimit|Config); partition debug has 2 nodes "
                    r"\(n\[1-2\]\) with \d+ CPUs, \d+ MB, GPUs/gres \(null\); cancelled it$", line), line
    q = subprocess.run(["squeue", "-h", "-j", job], env=cluster["env"], capture_output=True, text=True)
    assert q.stdout.strip() == "" or "CANCELLED" in q.stdout or " CG " in q.stdout, q.stdout
    assert checkpoint_sums(exp) == before


def test_more_gpus_per_node_than_the_nodes_have(cluster, work, two_nodes):
    exp = _stopped_copy(two_nodes[0], work / "gpus")
    before = checkpoint_sums(exp)
    # the config says nodes have 2 GPUs: 4 per node is refused before Slurm is asked
    p = step(cluster, work, exp, "--nodes", "2", "--gpus-per-node", "4", conf="slurm_fast.conf")
    assert p.returncode == 1
    assert (f"slurm.py: {exp}/log/train.log: the job asks for 4 GPUs on each of 2 node(s) but the nodes have 2 "
            "(gpus_per_node in the Slurm config): ask for 4 nodes of at most 2") in p.stderr, p.stderr
    # without that setting Slurm itself refuses: these nodes have no GPU at all
    p = step(cluster, work, exp, "--nodes", "2", "--gpus-per-node", "1")
    assert p.returncode == 1
    line = next(ln for ln in p.stderr.splitlines() if "Slurm refused" in ln)
    print("\n" + line)
    assert "(2 node(s) with 1 CPU(s) and gpu:1 each)" in line and "partition debug has 2 nodes" in line, line
    assert checkpoint_sums(exp) == before


def test_unreachable_rendezvous_fails_in_bounded_time(cluster, work, two_nodes):
    exp = _stopped_copy(two_nodes[0], work / "rdzv")
    before = checkpoint_sums(exp)
    t0 = time.monotonic()
    # .invalid never resolves (RFC 6761): no node can reach the rendezvous
    p = step(cluster, work, exp, "--nodes", "2", "--procs-per-node", "2", conf="slurm_fast.conf",
             env={"PYXV_MASTER_ADDR": "rendezvous.invalid"})
    seconds = time.monotonic() - t0
    print(f"\nunreachable rendezvous (timeout 5 s): failed after {seconds:.1f} s")
    assert p.returncode == 1 and seconds < 60, p.stderr
    print("\n".join(ln for ln in p.stderr.splitlines() if "training failed" in ln))
    job = (exp / "log" / "q" / "train.jobid").read_text().strip()
    assert re.search(rf"steps/train_xvector.sh: training failed \(Slurm job {job}\): pyxv.launch: Slurm job {job} "
                     r"node \d of 2 \(n\d\): no rendezvous with the other nodes at rendezvous.invalid:\d+ "
                     r"\(PYXV_MASTER_ADDR\) within 5 s", p.stderr), p.stderr
    assert checkpoint_sums(exp) == before


def test_node_whose_processes_die_fails_in_bounded_time(cluster, work, two_nodes):
    exp = work / "node_dies"
    shutil.copytree(two_nodes[0] / "feats", exp / "feats")
    p = step(cluster, work, exp, "--nodes", "2", "--procs-per-node", "2", background=True)
    log = exp / "log" / "train.log"
    wait_for(log, r"checkpoint \S+epoch_1_step_2\.pt", p)
    job = (exp / "log" / "q" / "train.jobid").read_text().strip()
    # n2 dies: its launcher and training processes (every process of the job's step there) killed at once
    victims = [pid for pid in _pids_of_step(job, "n2")]
    assert victims
    t0 = time.monotonic()
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out, err = p.communicate(timeout=300)
    seconds = time.monotonic() - t0
    print(f"\nnode n2's processes killed: the step failed after {seconds:.1f} s")
    assert p.returncode == 1 and seconds < 120, out + err
    print("\n".join(ln for ln in err.splitlines() if "training failed" in ln or "jobs failed" in ln))
    # One line: the job, and n2's end as srun saw it, followed by the launcher on n1 naming the rank
    # and gloo's error about the lost peer, or, where srun ended n1's task before its launcher
    # could say anything, srun's own line; or, where n1's processes noticed first, the launcher alone.
    line = next(ln for ln in err.splitlines() if "training failed" in ln)
    assert re.match(rf"steps/train_xvector.sh: training failed \(Slurm job {job}\): ((node n2 ended first \(srun: "
                    rf"n2: task 1: [^)]+\); )?pyxv.launch: Slurm job {job} node 0 of 2 \(n1\): |node n2 ended first "
                    rf"\(srun: n2: task 1: [^)]+\); srun: Force Terminated StepId={job}\.)", line), line
    assert ("node n2 ended first" in line
            or re.search(r"training process rank \d failed \(.*\): \w+Error: .*(Connection (closed|reset) by peer"
                         r"|remote worker)", line)), line
    assert not (exp / "final.pt").exists()
    # the newest checkpoint is whole: a training state to resume from
    newest = max((exp / "checkpoints").glob("*.pt"), key=lambda q: q.stat().st_mtime)
    state = torch.load(newest, weights_only=False)
    assert state["model"] and state["optimizer"] and state["step"] >= 2
    assert not list((exp / "checkpoints").glob("*.tmp*"))


def _stopped_copy(ref: Path, exp: Path) -> Path:
    """The reference run's directory without final.pt: prepared features and a
    newest checkpoint that a bad launch must leave as it is."""
    shutil.copytree(ref, exp, ignore=shutil.ignore_patterns("final.pt", "q"))
    return exp


def _pids_of_step(job: str, node: str) -> list[int]:
    """Processes of Slurm job ``job`` on ``node`` (by their SLURM_JOB_ID and
    SLURMD_NODENAME), the step's tasks and their children."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_JOB_ID={job}".encode() in env and f"SLURMD_NODENAME={node}".encode() in env \
                and b"SLURM_STEP_ID=0" in env:
            out.append(int(d.name))
    return out
