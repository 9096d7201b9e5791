"""DistributedDataParallel on CPU: 2 gloo processes (torchrun) of train.batch_size
B follow the same loss trajectory as 1 process of 2B (the same global batch), resume
bit-identically, and resume a 1-process checkpoint at the same global batch."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from pyxv.train.data import FeatureSource
from pyxv.train.trainer import train_classifier

from xvector_synth import TINY, make_datadir

torch.set_num_threads(1)

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from pyxv.train.data import FeatureSource
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


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one(tmp_path, repo_root):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not found")
    d = tmp_path / "data"
    u2s = make_datadir(d, n_spk=4, n_utt=8)
    # train.batch_size is per process: 1 x 64 and 2 x 32 are the same global batch of
    # 64; the lr follows it (linear rule against 32: 0.0025 x 64 / 32 on both).
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(epochs=3, steps_per_epoch=4, batch_size=64, lr=0.0025, lr_scale_ref_batch=32)
    one = train_classifier(FeatureSource(d / "feats.scp", vad_scp=d / "vad.scp", cmn_window=300), u2s, cfg,
                           tmp_path / "one", progress=False, use_gpu=False)
    cfg["train"]["batch_size"] = 32
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo_root), CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(d),
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
    """Two gloo processes killed (-9, agent and workers) after their first step
    checkpoint, then run again: the weights equal an uninterrupted 2-process run's."""
    import signal
    import time

    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not found")
    d = tmp_path / "data"
    make_datadir(d, n_spk=4, n_utt=8)
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(epochs=3, steps_per_epoch=4, batch_size=32, lr=0.005, checkpoint_interval=3)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo_root), CUDA_VISIBLE_DEVICES="")

    def cmd(out):
        return [torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(d), str(out), json.dumps(cfg)]

    p = subprocess.run(cmd(tmp_path / "full"), env=env, capture_output=True, text=True, timeout=120)
    assert _finished(p, tmp_path / "full"), p.stderr[-3000:]
    log = tmp_path / "killed.log"
    p = subprocess.Popen(cmd(tmp_path / "k"), env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    t0 = time.time()
    while "checkpoint /" not in log.read_text() and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    # torchrun starts its workers in sessions of their own: kill them by pid too
    workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout
    for pid in [p.pid] + [int(x) for x in workers.split()]:
        os.kill(pid, signal.SIGKILL)
    p.wait(timeout=30)
    time.sleep(0.5)
    assert not (tmp_path / "k" / "final.pt").exists()
    p = subprocess.run(cmd(tmp_path / "k"), env=env, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert _finished(p, tmp_path / "k") and "resuming from" in out, p.stderr[-3000:]
    a = torch.load(tmp_path / "full" / "final.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "k" / "final.pt", weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_ddp_resumes_a_one_process_checkpoint_at_the_same_global_batch(tmp_path, repo_root):
    """1 process x 64 stopped after epoch 1, then 2 processes x 32: the global batch,
    hence the batches, steps and lr schedule, is unchanged, so it resumes from the
    checkpoint (logging the new split) instead of starting over or refusing."""
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not found")
    d = tmp_path / "data"
    u2s = make_datadir(d, n_spk=4, n_utt=8)
    cfg = copy.deepcopy(TINY)
    cfg["train"].update(epochs=3, steps_per_epoch=4, batch_size=64, lr=0.005)
    src = FeatureSource(d / "feats.scp", vad_scp=d / "vad.scp", cmn_window=300)
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
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(d),
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
