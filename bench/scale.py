#!/usr/bin/env python3
"""The data-dir tools and the x-vector trainer's start-up at VoxCeleb2 scale.

Builds, in a temporary dir, a synthetic data dir of 1,098,000 utterances of
6,000 speakers (wav.scp with paths only, utt2spk, spk2utt, spk2gender), then
runs, each in its own process, and prints wall time and peak memory (max RSS):

- ``utils/validate_data_dir.sh --no-feats --no-wav <dir>``
- ``utils/fix_data_dir.sh <dir>``
- ``utils/split_data.sh <dir> 40``
- the x-vector trainer (``pyxv.bin.train_xvector``) on a 1.1M-entry
  ``feats.scp`` (every entry points into one small ark) with its
  ``utt2num_frames``: one step of one epoch of a tiny network, so the figure is
  the start-up (reading the tables, filtering, validation split, the epoch's
  batch plan, the model); and, in this process, the time to plan one epoch at
  the default number of steps (every voiced frame once).

    python bench/scale.py [--utts 1098000] [--speakers 6000] [--parts 40] [--keep DIR]

Targets (issue 14): split <= 20 s; validate, fix <= 30 s and <= 1 GB each;
trainer start-up <= 60 s and <= 2 GB.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_datadir(d: Path, n_utts: int, n_spk: int) -> None:
    """Synthetic VoxCeleb2-like dir, sorted, utterance ids prefixed by speaker."""
    d.mkdir(parents=True, exist_ok=True)
    per, extra = divmod(n_utts, n_spk)
    with open(d / "wav.scp", "w") as wav, open(d / "utt2spk", "w") as u2s, \
            open(d / "spk2utt", "w") as s2u, open(d / "spk2gender", "w") as s2g:
        for s in range(n_spk):
            spk = f"id{10000 + s:05d}"
            utts = [f"{spk}-v{k // 8:04d}-{k % 8:05d}" for k in range(per + (1 if s < extra else 0))]
            for u in utts:
                _, v, n = u.split("-")
                wav.write(f"{u} /corpora/voxceleb2/dev/wav/{spk}/{v}/{n}.wav\n")
                u2s.write(f"{u} {spk}\n")
            s2u.write(f"{spk} {' '.join(utts)}\n")
            s2g.write(f"{spk} {'mf'[s % 2]}\n")


def build_feats(d: Path, feats_dir: Path, n_real: int = 50, frames: int = 400, dim: int = 23) -> None:
    """feats.scp naming every utterance of ``d``, all pointing into an ark of
    ``n_real`` matrices; utt2num_frames to match."""
    import kaldiio
    import numpy as np

    feats_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ark = feats_dir / "small.ark"
    offsets = []
    with kaldiio.WriteHelper(f"ark,scp:{ark},{feats_dir / 'small.scp'}") as w:
        for i in range(n_real):
            w(f"m{i}", rng.normal(size=(frames, dim)).astype(np.float32))
    for line in open(feats_dir / "small.scp"):
        offsets.append(line.split(None, 1)[1].strip())
    with open(d / "utt2spk") as f, open(feats_dir / "feats.scp", "w") as scp, \
            open(feats_dir / "utt2num_frames", "w") as nf:
        for i, line in enumerate(f):
            u = line.split(None, 1)[0]
            scp.write(f"{u} {offsets[i % n_real]}\n")
            nf.write(f"{u} {frames}\n")


TINY_CONFIG = """\
model:
  input_dim: 23
  channels: [4, 4, 4, 4]
  blocks: [1, 1, 1, 1]
  heads: 1
  embed_dim: 16
data:
  min_frames: 50
  min_utts_per_class: 4
  valid_per_class: 1
  max_valid: 50
  chunk_min: 100
  chunk_max: 200
  valid_max_frames: 200
train:
  seed: 1
  epochs: 1
  steps_per_epoch: 1
  batch_size: 8
  num_workers: 0
  keep_checkpoints: 1
"""


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, float, int, str]:
    """(wall s, CPU s, peak RSS MB, exit code, stderr tail) of one child process.
    CPU seconds (user + system) say more than wall time on a shared machine."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, p.returncode, err[-400:]


def plan_time(feats_dir: Path, data: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds to plan one epoch at the default steps (every frame once)."""
    sys.path.insert(0, str(ROOT))
    from pyxv.io import read_table
    from pyxv.features.network_input import FeatureSource
    from pyxv.train.data import ChunkBatches, default_steps

    src = FeatureSource(feats_dir / "feats.scp", utt2num_frames=feats_dir / "utt2num_frames")
    u2s = read_table(data / "utt2spk")
    spks = sorted(set(u2s.values()))
    idx = {s: i for i, s in enumerate(spks)}
    utts = sorted(u2s)
    labels = [idx[u2s[u]] for u in utts]
    lengths = src.lengths
    steps = default_steps((lengths[u] for u in utts), 128, 200, 400)
    t, c = time.perf_counter(), time.process_time()
    ChunkBatches(src, utts, labels, lengths, batch_size=128, steps=steps, chunk_min=200, chunk_max=400)
    return time.perf_counter() - t, time.process_time() - c, steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utts", type=int, default=1_098_000)
    ap.add_argument("--speakers", type=int, default=6_000)
    ap.add_argument("--parts", type=int, default=40)
    ap.add_argument("--keep", help="build here and keep it (default: a temporary dir, removed)")
    ap.add_argument("--skip", default="", help="comma-separated: validate,fix,split,train,plan")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="pyxv_scale."))
    try:
        data = base / "data"
        t = time.perf_counter()
        if not (data / "utt2spk").is_file():
            build_datadir(data, a.utts, a.speakers)
        print(f"built {data}: {a.utts} utterances, {a.speakers} speakers in {time.perf_counter() - t:.1f} s",
              flush=True)
        with open("/proc/loadavg") as f:
            print(f"load: {f.read().strip()}", flush=True)
        print(f"{'step':<48} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}", flush=True)
        steps = [
            ("validate", "validate_data_dir.sh --no-feats --no-wav",
             [str(ROOT / "utils/validate_data_dir.sh"), "--no-feats", "--no-wav", str(data)]),
            ("fix", "fix_data_dir.sh", [str(ROOT / "utils/fix_data_dir.sh"), str(data)]),
            ("split", f"split_data.sh {a.parts}",
             [str(ROOT / "utils/split_data.sh"), "--force", str(data), str(a.parts)]),
        ]
        for key, label, cmd in steps:
            if key in skip:
                continue
            wall, cpu, mb, rc, err = run_measured(cmd, env)
            print(f"{label:<48} {wall:8.1f} {cpu:8.1f} {mb:8.0f}" + (f"  FAILED rc={rc}: {err}" if rc else ""),
                  flush=True)
        if not {"train", "plan"} <= skip:
            fd = base / "feats"
            if not (fd / "feats.scp").is_file():
                build_feats(data, fd)
        if "train" not in skip:
            cfg = base / "tiny.yaml"
            cfg.write_text(TINY_CONFIG)
            out = base / "exp"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "pyxv.bin.train_xvector", "--config", str(cfg), "--feats-dir", str(fd),
                   "--use-gpu", "no", str(data), str(out)]
            wall, cpu, mb, rc, err = run_measured(cmd, env)
            print(f"{'train_xvector start-up (1 step, 1.1M-entry scp)':<48} {wall:8.1f} {cpu:8.1f} {mb:8.0f}"
                  + (f"  FAILED rc={rc}: {err}" if rc else ""), flush=True)
        if "plan" not in skip:
            secs, cpu, n = plan_time(fd, data)
            print(f"{f'plan of one epoch ({n} steps x 128 chunks)':<48} {secs:8.1f} {cpu:8.1f}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
