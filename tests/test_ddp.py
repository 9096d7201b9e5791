"""DistributedDataParallel on CPU: 2 gloo processes (torchrun) of train.batch_size
B follow the same loss trajectory as 1 process of 2B (the same global batch), resume
bit-identically, and resume a 1-process checkpoint at the same global batch."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from pyxv.train.trainer import train_classifier

from xvector_synth import TINY, feature_source, make_datadir

torch.set_num_threads(1)

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from pyxv.features.network_input import FeatureSource
    from pyxv.train.trainer import train_classifier
    from pyxv.io import read_table
    d, out, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    src = FeatureSource(d + "/feats.scp", vad_scp=d + "/vad.scp", cmn_window=300)
    train_classifier(src, read_table(d + "/utt2spk"), cfg, out, progress=False, use_gpu=False)
""")


def _finished(p: subprocess.CompletedProcess, out_dir) -> bool:
    """The torchrun run ended well. About one run in ten on a loaded 2-core machine
    has a worker abort in gloo's teardown ("terminate called without an active
    exception", a torch race; pytorch/pytorch#179291 discusses that exit path)
    after training ended, final.pt written and logged. Only then is a non-zero
    exit accepted; the callers check the results either way."""
    out = p.stdout + p.stderr
    teardown_abort = ("terminate called without an active exception" in out
                      and f"wrote {out_dir / 'final.pt'}" in out)
    return p.returncode == 0 or teardown_abort



def _torchrun() -> list[str]:
    """torchrun as a module of this Python: found whatever the PATH, and in the tests'
    environment too, whose bin/ has no torchrun script of its own."""
    return [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one(tmp_path, repo_root):
    torchrun = _torchrun()
    d = tmp_path / "data"
    u2s = make_datadir(d, n_spk=4, n_utt=8)
    # train.batch_size is per process: 1 x 64 and 2 x 32 are the same global batch of
    # 64; the lr follows it (linear rule against 32: 0.0025 x 64 / 32 on both).
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(epochs=3, steps_per_epoch=4, batch_size=64, lr=0.0025, lr_scale_ref_batch=32)
    one = train_classifier(feature_source(d), u2s, cfg,
                           tmp_path / "one", progress=False, use_gpu=False)
    cfg["train"]["batch_size"] = 32
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo_root), CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([*torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(d),
                        str(tmp_path / "two"), json.dumps(cfg)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert _finished(p, tmp_path / "two"), p.stdout[-2000:] + p.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "log" / "history.json").read_text())
    l1 = [h["train_loss"] for h in one.history]
    l2 = [h["train_loss"] for h in two]
    print("\n1 process: ", [round(x, 4) for x in l1], "\n2 processes:", [round(x, 4) for x in l2])
    assert len(l2) == len(l1) == 3
    assert "4 steps/epoch of 64 chunks (2 process(es) x 32)" in p.stdout
    assert [h["lr"] for h in two] == [h["lr"] for h in one.history]     # same scaled lr and schedule
    # Same batches and synchronised gradients; only batch-norm statistics are per
    # process (32 chunks each instead of 64), hence a tolerance.
    for a, b in zip(l1, l2):
        assert abs(a - b) <= 0.05 * abs(a) + 0.02
    assert l2[-1] < 0.7 * l2[0]
    # only rank 0 writes
    assert (tmp_path / "two" / "final.pt").is_file()


@pytest.mark.slow
def test_ddp_resumes_from_a_mid_epoch_checkpoint_bit_identically(tmp_path, repo_root):
    """Four gloo processes killed (-9, agent and workers) after their first step
    checkpoint, then run again: the weights equal an uninterrupted 4-process run's.
    (With 2 processes every float sum is a + b whatever the order; with 4 the order
    counts, and DDP's buckets must keep one layout over restarts: wrap_ddp.)"""
    import signal
    import time

    torchrun = _torchrun()
    d = tmp_path / "data"
    make_datadir(d, n_spk=4, n_utt=8)
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(epochs=2, steps_per_epoch=4, batch_size=8, lr=0.005, checkpoint_interval=3)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo_root), CUDA_VISIBLE_DEVICES="")

    def cmd(out):
        return [*torchrun, "--standalone", "--nproc_per_node", "4", str(script), str(d), str(out), json.dumps(cfg)]

    p = subprocess.run(cmd(tmp_path / "full"), env=env, capture_output=True, text=True, timeout=180)
    assert _finished(p, tmp_path / "full"), p.stderr[-3000:]
    log = tmp_path / "killed.log"
    p = subprocess.Popen(cmd(tmp_path / "k"), env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    t0 = time.time()
    while "checkpoint /" not in log.read_text() and p.poll() is None and time.time() - t0 < 180:
        time.sleep(0.05)
    # torchrun starts its workers in sessions of their own: kill them by pid too
    workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout
    for pid in [p.pid] + [int(x) for x in workers.split()]:
        os.kill(pid, signal.SIGKILL)
    p.wait(timeout=30)
    time.sleep(0.5)
    assert not (tmp_path / "k" / "final.pt").exists()
    p = subprocess.run(cmd(tmp_path / "k"), env=env, capture_output=True, text=True, timeout=180)
    out = p.stdout + p.stderr
    assert _finished(p, tmp_path / "k") and "resuming from" in out, p.stderr[-3000:]
    assert "epoch_1_step_3.pt" in out     # mid-epoch: the first step after it is the one that rounded differently
    a = torch.load(tmp_path / "full" / "final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "k" / "final.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_ddp_resumes_a_one_process_checkpoint_at_the_same_global_batch(tmp_path, repo_root):
    """1 process x 64 stopped after epoch 1, then 2 processes x 32: the global batch,
    hence the batches, steps and lr schedule, is unchanged, so it resumes from the
    checkpoint (logging the new split) instead of starting over or refusing."""
    torchrun = _torchrun()
    d = tmp_path / "data"
    u2s = make_datadir(d, n_spk=4, n_utt=8)
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(epochs=3, steps_per_epoch=4, batch_size=64, lr=0.005)
    src = feature_source(d)
    one = train_classifier(src, u2s, cfg, tmp_path / "one", progress=False, use_gpu=False)

    def stop_after_1(epoch, rec):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(src, u2s, cfg, tmp_path / "k", progress=False, use_gpu=False, on_epoch_end=stop_after_1)
    cfg["train"]["batch_size"] = 32
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo_root), CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([*torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(d),
                        str(tmp_path / "k"), json.dumps(cfg)], env=env, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert _finished(p, tmp_path / "k"), out[-3000:]
    assert f"resuming from {tmp_path / 'k' / 'checkpoints' / 'epoch_1.pt'}" in out
    assert "now 2 process(es) x 32 (was 1 x 64)" in out and "starting over" not in out
    assert not list((tmp_path / "k").glob("stale_*"))
    hist = json.loads((tmp_path / "k" / "log" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    first = {k: v for k, v in one.history[0].items() if k != "seconds"}
    assert {k: v for k, v in hist[0].items() if k != "seconds"} == first   # epoch 1: the 1-process run's
    print("\n1 process:", [round(h["train_loss"], 4) for h in one.history],
          "\nresumed on 2:", [round(h["train_loss"], 4) for h in hist])
    # Epochs 2-3 on the same batches and lr; only batch-norm statistics are per process.
    assert [h["lr"] for h in hist] == [h["lr"] for h in one.history]
    for a, b in zip(one.history[1:], hist[1:]):
        assert abs(a["train_loss"] - b["train_loss"]) <= 0.05 * abs(a["train_loss"]) + 0.02


# ------------------------------------------------------------------ pre-emption
# The script with a pause after each step (argv[4] seconds), so that a signal comes mid-epoch.
PAUSED = SCRIPT.replace("progress=False, use_gpu=False)", "progress=False, use_gpu=False,\n"
                        "                 on_step=lambda e, s: time.sleep(float(sys.argv[4])))"
                        ).replace("import json, sys, torch", "import json, sys, time, torch")


def _preemption_cfg():
    cfg = copy.deepcopy(TINY)
    # log points (where the processes agree to stop) every 2 steps; a step checkpoint every 3
    cfg["train"].update(epochs=3, steps_per_epoch=8, batch_size=16, lr=0.005, log_interval=2, checkpoint_interval=3)
    return cfg


def _workers(pid: int) -> dict[int, int]:
    """torchrun's worker processes by rank."""
    out = {}
    ps = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    for w in map(int, ps.split()):
        try:
            env = dict(kv.split("=", 1) for kv in open(f"/proc/{w}/environ").read().split("\0") if "=" in kv)
        except OSError:
            continue
        if "RANK" in env:
            out[int(env["RANK"])] = w
    return out


class _Launch:
    """torchrun with 2 gloo processes of the test script, its output in a file."""

    def __init__(self, tmp_path, repo_root, out, pause):
        self.torchrun = _torchrun()
        self.tmp, self.out, self.pause = tmp_path, tmp_path / out, pause
        self.script = tmp_path / "paused_train.py"
        self.script.write_text(PAUSED)
        self.mark = tmp_path / "preempted.mark"
        self.env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo_root), CUDA_VISIBLE_DEVICES="",
                        PYXV_PREEMPTED_MARK=str(self.mark))
        self.n = 0

    def start(self):
        self.n += 1
        self.log = self.tmp / f"{self.out.name}.{self.n}.log"
        self.mark.unlink(missing_ok=True)
        self.p = subprocess.Popen([*self.torchrun, "--standalone", "--nproc_per_node", "2", str(self.script),
                                   str(self.tmp / "data"), str(self.out), json.dumps(_preemption_cfg()),
                                   str(self.pause)], env=self.env, stdout=open(self.log, "w"),
                                  stderr=subprocess.STDOUT)
        return self

    def wait_for(self, text, timeout=120):
        import time
        t0 = time.time()
        while text not in self.text() and self.p.poll() is None and time.time() - t0 < timeout:
            time.sleep(0.05)
        if text not in self.text():
            self.kill()
        assert text in self.text(), self.text()[-3000:]

    def text(self):
        return self.log.read_text()

    def end(self, timeout=120):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self):
        """torchrun and its workers (in sessions of their own) -9, if still there."""
        for pid in [self.p.pid] + list(_workers(self.p.pid).values()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.p.wait()


@pytest.fixture(scope="module")
def preemption_reference(tmp_path_factory, repo_root):
    """The weights of an uninterrupted 2-process run of :func:`_preemption_cfg`."""
    tmp = tmp_path_factory.mktemp("ddp_ref")
    make_datadir(tmp / "data", n_spk=4, n_utt=8)
    run = _Launch(tmp, repo_root, "full", 0).start()
    run.end()
    assert (tmp / "full" / "final.pt").is_file(), run.text()[-3000:]
    return torch.load(tmp / "full" / "final.pt", weights_only=True)["model"]


def _same(a, b):
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_ddp_stop_signal_to_one_process_stops_all_at_one_step_exit_75_and_resumes_exactly(
        tmp_path, repo_root, preemption_reference):
    """SIGUSR1 to rank 1 only: at the next log point both processes agree to stop,
    rank 0 writes a step checkpoint, both exit 75 and touch the launcher's mark.
    Again with SIGTERM to rank 0 on the resumed run; the third run ends with the
    weights of an uninterrupted one."""
    import time

    make_datadir(tmp_path / "data", n_spk=4, n_utt=8)
    run = _Launch(tmp_path, repo_root, "k", 0.25).start()
    run.wait_for("epoch 1 step 2/8")
    os.kill(_workers(run.p.pid)[1], signal.SIGUSR1)
    rc = run.end()
    out = run.text()
    assert rc != 0 and run.mark.is_file(), out[-3000:]              # torchrun itself says 1 for a 75
    assert "exitcode  : 75" in out                                  # (the other may be ended by torchrun first)
    assert "stopping for pre-emption (signal to another process) in epoch" in out   # rank 0 was not signalled
    newest = max((tmp_path / "k" / "checkpoints").glob("epoch_*.pt"), key=os.path.getmtime)
    assert "_step_" in newest.name and f"checkpoint {newest} written" in out
    assert not (tmp_path / "k" / "final.pt").exists()

    run.start()
    run.wait_for("resuming from")
    time.sleep(0.5)
    os.kill(_workers(run.p.pid)[0], signal.SIGTERM)
    assert run.end() != 0 and run.mark.is_file(), run.text()[-3000:]
    assert "stopping for pre-emption (SIGTERM here)" in run.text()

    run.pause = 0
    run.start()
    assert _finished_run(run), run.text()[-3000:]
    assert "resuming from" in run.text() and not run.mark.exists()
    _same(preemption_reference, torch.load(tmp_path / "k" / "final.pt", weights_only=True)["model"])


def _finished_run(run) -> bool:
    rc = run.end()
    return _finished(subprocess.CompletedProcess(run.p.args, rc, run.text(), ""), run.out)


@pytest.mark.slow
def test_ddp_kill_of_one_process_ends_the_other_in_bounded_time_and_the_rerun_resumes(
        tmp_path, repo_root, preemption_reference):
    """SIGKILL (no chance to checkpoint) of rank 1 after the first step checkpoint:
    rank 0 does not hang (its next collective fails; torchrun ends it), the launch
    ends within 60 s without final.pt, and the rerun resumes exactly."""
    import time

    make_datadir(tmp_path / "data", n_spk=4, n_utt=8)
    run = _Launch(tmp_path, repo_root, "k", 0.25).start()
    run.wait_for("checkpoint /")
    t0 = time.time()
    os.kill(_workers(run.p.pid)[1], signal.SIGKILL)
    rc = run.end(timeout=90)
    took = time.time() - t0
    print(f"\nthe launch ended {took:.1f} s after the kill (exit {rc})")
    assert took < 60 and rc != 0 and not run.mark.exists(), run.text()[-3000:]
    assert not (tmp_path / "k" / "final.pt").exists()
    run.pause = 0
    run.start()
    assert _finished_run(run), run.text()[-3000:]
    assert "resuming from" in run.text()
    _same(preemption_reference, torch.load(tmp_path / "k" / "final.pt", weights_only=True)["model"])


def test_wrap_ddp_fixes_the_bucket_layout_on_cpu_only(monkeypatch):
    """The device path without a GPU: on CPU (gloo) DDP never rebuilds its buckets
    (find_unused_parameters=True), on a GPU it keeps torch's default and its device."""
    from pyxv.train import distributed as dd

    made = []
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda net, **kw: made.append(kw) or net)
    net = torch.nn.Linear(2, 2)
    dd.wrap_ddp(net, dd.DistInfo(rank=0, world=4, device=torch.device("cpu")))
    dd.wrap_ddp(net, dd.DistInfo(rank=1, world=4, local_rank=1, device=torch.device("cuda", 1)))
    assert made == [{"device_ids": None, "find_unused_parameters": True},
                    {"device_ids": [1], "find_unused_parameters": False}]
