#!/usr/bin/env python3
"""Speed of the paper's x-vector (conf/xvector_resnet34.yaml): training chunks/s
(batch 32 chunks of 300 frames, 1000 speakers, A-softmax, Adam step) and
extraction speed as a real-time factor (100 frames = 1 s of speech; every frame
counted as voiced, the worst case), on CPU and, when there is one, on a GPU.

    python bench/xvector.py [--threads 2] [--config conf/xvector_resnet34.yaml]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyxv.extract import embed_matrices  # noqa: E402
from pyxv.nnet.config import load_config  # noqa: E402
from pyxv.nnet.xvector import XVectorNet  # noqa: E402


def bench_train(net, device, steps, batch, frames, amp=None):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    x = torch.randn(batch, frames, net.input_dim, device=device)
    y = torch.randint(0, net.num_classes, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = net(x, y)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def bench_extract(net, device, seconds_total, seed=0):
    rng = np.random.default_rng(seed)
    durs = rng.uniform(2.0, 8.0, size=200)
    durs = durs[: np.searchsorted(np.cumsum(durs), seconds_total) + 1]
    mats = [rng.normal(size=(int(d * 100), net.input_dim)).astype(np.float32) for d in durs]
    net.eval()
    embed_matrices(net, mats[:2], device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    embed_matrices(net, mats, device=device, chunk_frames=6000)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return float(durs.sum()) / (time.perf_counter() - t), float(durs.sum())


def _extract_job(args):
    cfg_path, seconds, seed = args
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = XVectorNet.from_config(load_config(cfg_path), 1000)
    return bench_extract(net, torch.device("cpu"), seconds, seed)


def bench_extract_jobs(cfg_path, seconds, jobs):
    """As steps/extract_xvectors.sh --nj N runs: N one-thread processes, each half the data."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(jobs) as pool:
        pool.map(_extract_job, [(cfg_path, 5.0, j) for j in range(jobs)])  # start-up, not timed
        t = time.perf_counter()
        res = pool.map(_extract_job, [(cfg_path, seconds / jobs, j) for j in range(jobs)])
        wall = time.perf_counter() - t
    total = sum(r[1] for r in res)
    return total / wall, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="conf/xvector_resnet34.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--extract-seconds", type=float, default=120.0, help="seconds of speech to embed")
    ap.add_argument("--speakers", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2, help="one-thread extraction processes (as --nj)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    torch.manual_seed(0)
    print(f"config {a.config}: channels {cfg['model']['channels']} blocks {cfg['model']['blocks']} "
          f"heads {cfg['model']['heads']} embed {cfg['model']['embed_dim']}; torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        net = XVectorNet.from_config(cfg, a.speakers).to(dev)
        name = f"CPU, {a.threads} threads" if dev.type == "cpu" else f"GPU {torch.cuda.get_device_name(0)}"
        steps = a.train_steps if dev.type == "cpu" else 30
        cps = bench_train(net, dev, steps, 32, 300)
        line = f"[{name}] training: {cps:.1f} chunks/s (batch 32 x 300 frames, fp32)"
        if dev.type == "cuda":
            line += f"; {bench_train(net, dev, steps, 32, 300, torch.bfloat16):.1f} chunks/s with bf16 autocast"
        print(line, flush=True)
        secs = a.extract_seconds if dev.type == "cpu" else a.extract_seconds * 20
        rtf, total = bench_extract(net, dev, secs)
        print(f"[{name}] extraction: {rtf:.0f}x real time ({total:.0f} s of speech, 2-8 s utterances)", flush=True)
    rtf, total = bench_extract_jobs(a.config, a.extract_seconds, a.jobs)
    print(f"[CPU, {a.jobs} processes x 1 thread, as extract_xvectors.sh --nj {a.jobs}] extraction: "
          f"{rtf:.0f}x real time ({total:.0f} s of speech)", flush=True)


if __name__ == "__main__":
    main()
