#!/usr/bin/env python3
"""What writing only safely loadable checkpoints costs: the paper's x-vector
(conf/xvector_resnet34.yaml, 1000 speakers) with its Adam state, as the trainer
saves it every epoch and every ``train.checkpoint_interval`` steps.

    python bench/checkpoint.py [--config conf/xvector_resnet34.yaml] [--rounds 5]

Prints, per round and as medians, side by side in one process:

- ``torch.save``: serialising the training state in memory (what saving did before);
- ``check``: the ``torch.load(weights_only=True)`` of those bytes that
  ``pyxv.train.checkpoint.save`` adds, so that no file needs the unpickler that can run code;
- ``ckpt.save``: the whole save (plain values, serialise, check, fsync'ed write and rename);
- ``load``: ``checkpoint.load`` of the file (weights only) beside ``torch.load(weights_only=False)``.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from pyxv.nnet.config import load_config  # noqa: E402
from pyxv.nnet.xvector import XVectorNet  # noqa: E402
from pyxv.train import checkpoint as ckpt  # noqa: E402


def training_state(cfg_path: str) -> dict:
    """The trainer's checkpoint of the paper model after one Adam step (so the optimizer has its moments)."""
    cfg = load_config(cfg_path)
    net = XVectorNet.from_config(cfg, 1000)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(2, 200, net.input_dim)
    net.train()
    torch.nn.functional.cross_entropy(net(x, torch.tensor([0, 1])), torch.tensor([0, 1])).backward()
    opt.step()
    state = ckpt.model_file(net, cfg, [f"spk{i}" for i in range(1000)], {}, epoch=1,
                            history=[{"epoch": 1, "train_loss": 1.0}])
    state.update(optimizer=opt.state_dict(), scheduler={"last_epoch": 1}, scaler=None, best={"bad": 0},
                 step=0, mid_epoch=False, sums=[0.0, 0.0, 0.0], rng={"torch": torch.get_rng_state(),
                                                                      "cuda_by_rank": None}, fingerprint={})
    return state


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=os.path.join(REPO, "conf/xvector_resnet34.yaml"))
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    state = training_state(a.config)
    rows = {k: [] for k in ("torch.save", "check", "ckpt.save", "load (weights only)", "load (full unpickler)")}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "epoch_1.pt"
        for r in range(a.rounds):
            t = time.perf_counter()
            buf = io.BytesIO()
            torch.save(state, buf)
            rows["torch.save"].append(time.perf_counter() - t)
            buf.seek(0)
            t = time.perf_counter()
            torch.load(buf, map_location="cpu", weights_only=True)
            rows["check"].append(time.perf_counter() - t)
            t = time.perf_counter()
            ckpt.save(state, path)
            rows["ckpt.save"].append(time.perf_counter() - t)
            t = time.perf_counter()
            ckpt.load(path)
            rows["load (weights only)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            torch.load(path, map_location="cpu", weights_only=False)
            rows["load (full unpickler)"].append(time.perf_counter() - t)
        size = path.stat().st_size
    print(f"paper x-vector training state: {size / 2**20:.1f} MiB ({a.config}), {a.rounds} rounds, one thread")
    for k, v in rows.items():
        print(f"  {k:24s} median {1000 * statistics.median(v):8.1f} ms   rounds: "
              + " ".join(f"{1000 * x:.0f}" for x in v))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"  the check adds {100 * med['check'] / med['torch.save']:.0f} % to serialising; "
          f"weights-only load / full load = {med['load (weights only)'] / med['load (full unpickler)']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
