#!/usr/bin/env python3
"""Multi-process training on CPU (DDP, gloo): scaling and the cost of one gradient-bucket layout.

    python bench/ddp.py [--config conf/xvector_demo.yaml] [--processes 1 2] [--steps 30] [--part all|scaling|buckets]

- **scaling**: the x-vector trainer (``train_classifier``, as stage 3 runs it) on a
  synthetic data dir, 1 and 2 processes at the config's fixed per-process
  ``train.batch_size`` (the global batch grows with the processes). Prints
  chunks/s from the trainer's own log lines (the first log window, start-up and
  warm-up, left out). On a machine of 2 cores, 4 processes only oversubscribe.
- **buckets**: one forward+backward+all-reduce of the config's network at its
  batch and ``data.chunk_max`` frames in 2 gloo processes, through DDP as the
  trainer wraps it on CPU (``pyxv.train.distributed.wrap_ddp``: one bucket layout
  for the whole run, ``find_unused_parameters=True``) and as torch's default
  (buckets rebuilt after the first iteration), steps alternating between the
  two (each first every other step); median wall and CPU (this process's own
  time, less disturbed by other load on the machine) ms per step of each and the
  ratios. (Bit-identical resumes at 4
  processes are checked by the tests: tests/test_ddp.py, tests/test_slurm_multinode.py.)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAIN = """
import json, sys, torch
torch.set_num_threads(1)
from pyxv.io import read_table
from pyxv.features.network_input import FeatureSource
from pyxv.train.trainer import train_classifier
d, out, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
src = FeatureSource(d + "/feats.scp", cmn_window=300)
train_classifier(src, read_table(d + "/utt2spk"), cfg, out, progress=False, use_gpu=False)
"""


def make_data(d: Path, dim: int, n_spk: int = 16, n_utt: int = 12, frames: int = 400) -> None:
    """Random features (content does not matter for speed), Kaldi data-dir tables."""
    from pyxv.features.archive import ArkScpWriter

    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    with ArkScpWriter(d / "feats.ark", d / "feats.scp") as w, open(d / "utt2spk", "w") as u2s:
        for s in range(n_spk):
            for i in range(n_utt):
                u = f"spk{s:02d}-{i:03d}"
                w.write(u, (rng.standard_normal((frames, dim)) + s * 0.1).astype(np.float32))
                u2s.write(f"{u} spk{s:02d}\n")


def scaling(cfg: dict, processes: list[int], steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_data(tmp / "data", cfg["model"]["input_dim"])
        c = copy.deepcopy(cfg)
        c["data"].update(valid_per_class=0, apply_vad=False)
        c["train"].update(epochs=1, steps_per_epoch=steps, log_interval=max(1, steps // 5), num_workers=0,
                          checkpoint_interval=0)
        (tmp / "train.py").write_text(TRAIN)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
        b = c["train"]["batch_size"]
        print(f"scaling: {steps} steps of the trainer at train.batch_size {b} per process "
              f"({os.cpu_count()} CPU cores, one thread per process)")
        for n in processes:
            out = tmp / f"p{n}"
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                "--nproc_per_node", str(n), str(tmp / "train.py"), str(tmp / "data"), str(out),
                                json.dumps(c)], env=env, capture_output=True, text=True)
            wall = time.monotonic() - t0
            if not (out / "final.pt").is_file():
                sys.exit(f"bench/ddp.py: the {n}-process run failed:\n{p.stderr[-2000:]}")
            rates = [float(r) for r in re.findall(r"([\d.]+) chunks/s", p.stdout + p.stderr)]
            rate = statistics.mean(rates[1:]) if len(rates) > 1 else rates[0]
            print(f"  {n} process(es) x {b} = global batch {n * b}: {rate:7.1f} chunks/s "
                  f"(log windows after the first: {', '.join(f'{r:.1f}' for r in rates[1:])}; wall {wall:.1f} s)")


def _bucket_worker(rank: int, world: int, cfg: dict, steps: int, port: int, q) -> None:
    import torch.distributed as dist

    from pyxv.nnet.config import build_encoder
    from pyxv.train.distributed import DistInfo, wrap_ddp

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    nets = {}
    for name in ("one layout (wrap_ddp)", "rebuilt (torch default)"):
        torch.manual_seed(0)
        net = build_encoder(cfg, 64)
        ddp = (wrap_ddp(net, DistInfo(rank, world)) if name.startswith("one")
               else torch.nn.parallel.DistributedDataParallel(net))
        nets[name] = (net, ddp)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(cfg["train"]["batch_size"], cfg["data"]["chunk_max"], cfg["model"]["input_dim"], generator=g)
    y = torch.randint(0, 64, (len(x),), generator=g)
    times, cpu = {k: [] for k in nets}, {k: [] for k in nets}
    names = list(nets)
    for i in range(steps + 3):
        for k in (names if i % 2 == 0 else names[::-1]):    # each goes first every other step
            net, ddp = nets[k]
            dist.barrier()
            t, c = time.perf_counter(), time.process_time()
            out, _ = ddp(x, y, with_plain=True)
            loss = torch.nn.functional.cross_entropy(out, y)
            net.zero_grad(set_to_none=True)
            loss.backward()
            dt, dc = time.perf_counter() - t, time.process_time() - c
            if i >= 3:      # the first steps (and torch's rebuild) left out of the timing
                times[k].append(dt)
                cpu[k].append(dc)
    if rank == 0:
        q.put({k: (statistics.median(times[k]), statistics.median(cpu[k])) for k in nets})
    dist.destroy_process_group()


def buckets(cfg: dict, steps: int, world: int = 2) -> None:
    import torch.multiprocessing as mp

    from pyxv.nnet.config import validate_config

    c = validate_config(cfg)
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    os.environ["OMP_NUM_THREADS"] = "1"
    mp.start_processes(_bucket_worker, args=(world, c, steps, 29400 + os.getpid() % 500, q), nprocs=world,
                       start_method="spawn")
    med = q.get()
    print(f"buckets: {world} gloo processes, {steps} steps each way, batch {c['train']['batch_size']} x "
          f"{c['data']['chunk_max']} frames, forward+backward+all-reduce, median per step (rank 0):")
    wall0, cpu0 = med["rebuilt (torch default)"]
    for k, (wall, cpu) in med.items():
        print(f"  {k:26s} wall {wall * 1e3:7.1f} ms ({wall / wall0:.3f} x the default)   "
              f"CPU {cpu * 1e3:7.1f} ms ({cpu / cpu0:.3f} x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "conf" / "xvector_demo.yaml"))
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--part", choices=("all", "scaling", "buckets"), default="all")
    a = ap.parse_args()
    cfg = yaml.safe_load(Path(a.config).read_text())
    print(f"config {a.config}; torch {torch.__version__}")
    if a.part in ("all", "buckets"):
        buckets(cfg, a.steps)
    if a.part in ("all", "scaling"):
        scaling(cfg, a.processes, a.steps)


if __name__ == "__main__":
    main()
