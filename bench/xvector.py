#!/usr/bin/env python3
"""Speed of the paper's x-vector (conf/xvector_resnet34.yaml) on CPU: training
chunks/s (batch 32 chunks of 300 frames, 1000 speakers, A-softmax, Adam step)
and extraction speed as a real-time factor (100 frames = 1 s of speech; every
frame counted as voiced, the worst case). GPU figures: bench/gpu.sh.

    python bench/xvector.py [--threads 1] [--jobs 2] [--config conf/xvector_resnet34.yaml]
    python bench/xvector.py --against afd3e7f~1   # this code beside that revision's (before issue 24)

On CPU every figure is printed twice, measured side by side (rounds
interleaved, so a busy machine slows both alike; in one process, except the
``--jobs`` extraction, where each variant has processes of its own as real jobs do):

- ``before``: the forms the code had before issue 14, rebuilt here: the
  pooling's distances from a (B, H, T, D) tensor of differences x_t - mu_h,
  conv weights in the contiguous layout;
- ``now``: the network as ``pyxv.nnet`` builds it; extraction through
  ``for_cpu_extraction`` (batch norm folded, utterances of different lengths
  packed into rows of one shape), as stage 4 runs.

and the largest relative difference between their embeddings.

``--against REV`` instead puts the code of git revision REV (its ``pyxv`` and
``conf``, from ``git archive``) beside this checkout's: training chunks/s and
extraction x real time of each, as stage 4 runs it (``for_cpu_extraction``),
each measurement in a process of its own (a fresh interpreter importing that
revision's package), the two alternating for ``--rounds`` rounds (which of them
goes first alternates too).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A measurement of another revision (--against) imports that revision's package instead.
sys.path.insert(0, sys.argv[sys.argv.index("--code-root") + 1] if "--code-root" in sys.argv else REPO)
from pyxv.extract import embed_matrices  # noqa: E402
from pyxv.nnet.config import load_config  # noqa: E402
from pyxv.nnet.cpu_embedder import for_cpu_extraction  # noqa: E402
from pyxv.nnet.xvector import XVectorNet  # noqa: E402


def _direct_distances(self, x):
    diff = x.unsqueeze(1) - self.mu.view(1, self.heads, 1, self.dim)  # (B, H, T, D)
    return torch.sqrt(diff.pow(2).sum(-1) + self.eps)


def before_issue14(net):
    """A copy of ``net`` computing as the code did before issue 14."""
    ref = copy.deepcopy(net)
    ref.trunk.to(memory_format=torch.contiguous_format)
    ref.pool.distances = types.MethodType(_direct_distances, ref.pool)
    return ref


def train_step_fn(net, device, batch, frames):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    x = torch.randn(batch, frames, net.input_dim, device=device)
    y = torch.randint(0, net.num_classes, (batch,), device=device)

    def step():
        out = net(x, y)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    return step


def bench_train(nets, device, steps, batch, frames, rounds=2):
    """chunks/s of each net, ``rounds`` interleaved rounds of ``steps`` steps."""
    fns = [train_step_fn(n, device, batch, frames) for n in nets]
    secs = [0.0] * len(nets)
    for _ in range(rounds):
        for i, step in enumerate(fns):
            t = time.perf_counter()
            for _ in range(steps):
                step()
            secs[i] += time.perf_counter() - t
    return [rounds * steps * batch / s for s in secs]


def speech(seconds_total, dim, seed=0):
    rng = np.random.default_rng(seed)
    durs = rng.uniform(2.0, 8.0, size=400)
    durs = durs[: np.searchsorted(np.cumsum(durs), seconds_total) + 1]
    return [rng.normal(size=(int(d * 100), dim)).astype(np.float32) for d in durs], float(durs.sum())


def bench_extract(nets, device, seconds_total, seed=0, rounds=2):
    """(x real time of each net, seconds of speech); rounds interleaved."""
    mats, total = speech(seconds_total, nets[0].input_dim, seed)
    secs = [0.0] * len(nets)
    for n in nets:
        n.eval()
        embed_matrices(n, mats[:2], device=device)  # warm-up
    for _ in range(rounds):
        for i, n in enumerate(nets):
            t = time.perf_counter()
            embed_matrices(n, mats, device=device, chunk_frames=6000)
            secs[i] += time.perf_counter() - t
    return [rounds * total / s for s in secs], total


def embedding_gap(net, ref, seconds=30.0, seed=1):
    """Largest relative difference between the embeddings of two nets."""
    mats, _ = speech(seconds, net.input_dim, seed)
    a = embed_matrices(net.eval(), mats)
    b = embed_matrices(ref.eval(), mats)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def _extract_job(args):
    cfg_path, variant, seconds, seed, barrier = args
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = XVectorNet.from_config(load_config(cfg_path), 1000)
    net = before_issue14(net) if variant == 0 else for_cpu_extraction(net.eval())
    mats, total = speech(seconds, net.input_dim, seed)
    net.eval()
    embed_matrices(net, mats[:2])
    barrier.wait()   # every process times the same stretch, all cores busy (as in a real --nj run)
    t = time.perf_counter()
    embed_matrices(net, mats, chunk_frames=6000)
    return time.perf_counter() - t, total


def bench_extract_jobs(cfg_path, seconds, jobs, rounds=2):
    """As steps/extract_xvectors.sh --nj N runs: N one-thread processes, each
    1/N of the speech, timed together; per variant, all speech over the slowest
    process's time. Each variant runs in processes of its own, as a real job
    would (run in one process, the before-net's hundreds of conv shapes evict the
    now-net's from oneDNN's primitive cache and cost it ~20 %); rounds alternate
    between the variants."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    secs, total = [0.0, 0.0], 0.0
    with ctx.Manager() as manager:
        barrier = manager.Barrier(jobs)
        for _ in range(rounds):
            for variant in (0, 1):
                with ctx.Pool(jobs) as pool:
                    res = pool.map(_extract_job, [(cfg_path, variant, seconds / jobs, j, barrier)
                                                  for j in range(jobs)])
                secs[variant] += max(r[0] for r in res)
                total += sum(r[1] for r in res) / 2
    return [total / s for s in secs], total / rounds


def _one_measurement(what: str, cfg_path: str, threads: int, amount: float) -> float:
    """In a process of its own: chunks/s of ``amount`` training steps, or x real time of embedding
    ``amount`` seconds of speech, with the package this process imported."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = XVectorNet.from_config(load_config(cfg_path), 1000)
    if what == "train":
        return bench_train([net], torch.device("cpu"), int(amount), 32, 300, rounds=1)[0]
    return bench_extract([for_cpu_extraction(net.eval())], torch.device("cpu"), amount, rounds=1)[0][0]


def against(rev: str, config: str, threads: int, train_steps: int, extract_seconds: float, rounds: int) -> None:
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pyxv_rev_") as old:
        subprocess.run(f"git archive {rev} pyxv conf | tar -x -C {old}", shell=True, cwd=REPO, check=True)
        sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        roots = {f"{rev} ({sha})": old, "this checkout": REPO}
        got = {(w, name): [] for w in ("train", "extract") for name in roots}
        for rnd in range(rounds):
            for what, amount in (("train", train_steps), ("extract", extract_seconds)):
                for name, root in list(roots.items())[::1 if rnd % 2 == 0 else -1]:  # who goes first alternates
                    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--code-root", root, "--measure",
                                        what, "--config", os.path.join(root, config), "--threads", str(threads),
                                        "--amount", str(amount)], capture_output=True, text=True, check=True)
                    out = json.loads(r.stdout.strip().splitlines()[-1])
                    if os.path.realpath(out["code"]) != os.path.realpath(root):
                        raise SystemExit(f"xvector.py: the {name} measurement imported pyxv from {out['code']}")
                    got[what, name].append(out["value"])
        (b, n) = roots
        for what, unit in (("train", "chunks/s (batch 32 x 300 frames, fp32, Adam)"),
                           ("extract", f"x real time ({extract_seconds:.0f} s of speech, 2-8 s utterances)")):
            vb, vn = np.mean(got[what, b]), np.mean(got[what, n])
            print(f"[CPU, {threads} threads] {'training' if what == 'train' else 'extraction'} {unit}: "
                  f"{b} {vb:.1f}, {n} {vn:.1f} ({vn / vb:.2f}x); rounds {got[what, b]} vs {got[what, n]}",
                  flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="conf/xvector_resnet34.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--extract-seconds", type=float, default=600.0,
                    help="seconds of speech to embed (2 minutes made the 2-process figure swing by 20 %%)")
    ap.add_argument("--speakers", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2, help="one-thread extraction processes (as --nj)")
    ap.add_argument("--against", metavar="REV", help="measure this checkout beside git revision REV instead")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds with --against")
    ap.add_argument("--measure", choices=("train", "extract"), help=argparse.SUPPRESS)  # one measurement, one process
    ap.add_argument("--amount", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--code-root", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        import json

        import pyxv

        print(json.dumps({"value": round(_one_measurement(a.measure, a.config, a.threads, a.amount), 2),
                          "code": os.path.dirname(os.path.dirname(os.path.abspath(pyxv.__file__)))}))
        return
    if a.against:
        against(a.against, a.config, a.threads, a.train_steps, a.extract_seconds, a.rounds)
        return
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    torch.manual_seed(0)
    print(f"config {a.config}: channels {cfg['model']['channels']} blocks {cfg['model']['blocks']} "
          f"heads {cfg['model']['heads']} embed {cfg['model']['embed_dim']}; torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    net = XVectorNet.from_config(cfg, a.speakers)
    name = f"CPU, {a.threads} threads"
    cpu = torch.device("cpu")
    before, now = bench_train([before_issue14(net), copy.deepcopy(net)], cpu, a.train_steps, 32, 300)
    print(f"[{name}] training (batch 32 x 300 frames, fp32): before {before:.1f} chunks/s, now {now:.1f} "
          f"chunks/s ({now / before:.2f}x)", flush=True)
    (before, now), total = bench_extract([before_issue14(net), for_cpu_extraction(net.eval())], cpu,
                                         a.extract_seconds)
    print(f"[{name}] extraction ({total:.0f} s of speech, 2-8 s utterances): before {before:.0f}x real time, "
          f"now {now:.0f}x ({now / before:.2f}x)", flush=True)
    print(f"[{name}] embeddings now vs before: max relative difference "
          f"{embedding_gap(for_cpu_extraction(net.eval()), before_issue14(net)):.1e}", flush=True)
    (before, now), total = bench_extract_jobs(a.config, a.extract_seconds, a.jobs)
    print(f"[CPU, {a.jobs} processes x 1 thread, as extract_xvectors.sh --nj {a.jobs}] extraction "
          f"({total:.0f} s of speech): before {before:.0f}x real time, now {now:.0f}x ({now / before:.2f}x); "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
