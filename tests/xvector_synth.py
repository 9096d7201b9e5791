"""Synthetic speaker data for the x-vector tests: Kaldi data dirs whose
"speakers" differ in per-dimension feature scale and temporal smoothness
(differences that survive sliding CMN), written with kaldiio."""
from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np


def make_datadir(d, n_spk: int = 4, n_utt: int = 8, dim: int = 23, seed: int = 0, frames=(120, 260),
                 vad_drop: float = 0.15) -> dict:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    u2s = {}
    with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as w, \
         kaldiio.WriteHelper(f"ark,scp:{d}/vad.ark,{d}/vad.scp") as v:
        for s in range(n_spk):
            scale = np.exp(rng.normal(size=dim))
            alpha = rng.uniform(0.0, 0.9)
            for i in range(n_utt):
                T = int(rng.integers(*frames))
                e = rng.normal(size=(T, dim))
                for t in range(1, T):           # AR(1): speaker-specific smoothness
                    e[t] += alpha * e[t - 1]
                x = (e * scale + rng.normal(size=dim) * 3).astype(np.float32)
                u = f"spk{s}-utt{i:02d}"
                w(u, x)
                v(u, (rng.random(T) > vad_drop).astype(np.float32))
                u2s[u] = f"spk{s}"
    with open(d / "utt2spk", "w") as f:
        for u in sorted(u2s):
            f.write(f"{u} {u2s[u]}\n")
    with open(d / "spk2utt", "w") as f:
        for s in sorted(set(u2s.values())):
            f.write(s + " " + " ".join(u for u in sorted(u2s) if u2s[u] == s) + "\n")
    return u2s


TINY = {
    "model": {"channels": [4, 8], "blocks": [1, 1], "heads": 2, "embed_dim": 16, "first_kernel": 3,
              "loss": "amsoftmax", "margin": 0.1, "scale": 10.0},
    "data": {"min_frames": 50, "chunk_min": 40, "chunk_max": 60, "min_utts_per_class": 2},
    "train": {"epochs": 3, "steps_per_epoch": 8, "batch_size": 8, "warmup_steps": 4, "log_interval": 4,
              "lr": 0.01, "keep_checkpoints": 0},
    "extract": {"chunk_frames": 100},
}


def feature_source(d):
    """The training features of a data dir made by :func:`make_datadir`, as the recipe reads
    them: its VAD applied, sliding CMN over 300 frames."""
    from pyxv.features.network_input import FeatureSource

    return FeatureSource(Path(d) / "feats.scp", vad_scp=Path(d) / "vad.scp", cmn_window=300)
