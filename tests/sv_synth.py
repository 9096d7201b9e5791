"""Synthetic x-vectors that emotion moves, for the tests of the emotion-compensating
SV back-ends and of the per-fold SV protocol."""
from __future__ import annotations

import numpy as np

EMOS = ["angry", "happy", "sad", "neutral"]


def emotional_set(n_spk, seed, dim=32, n_utt=6, emo_rank=3, emo_scale=2.5, spk_scale=1.0, noise=1.0):
    """Speaker part + emotion offset + noise.

    Each speaker has a centre; each (speaker, emotion) an offset inside a fixed
    ``emo_rank``-dim subspace (a shared per-emotion part plus a speaker-specific
    part), so emotion moves every speaker, differently, within known directions.
    Returns X (N, D), spk, gender, emo (N,) arrays and the emotion basis (D, rank).
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(dim, emo_rank)))[0]
    shared = np.random.default_rng(98).normal(size=(len(EMOS), emo_rank))
    X, spk, gen, emo = [], [], [], []
    for s in range(n_spk):
        c = rng.normal(size=dim) * spk_scale
        for e, name in enumerate(EMOS):
            off = basis @ (shared[e] + rng.normal(size=emo_rank)) * emo_scale
            for _ in range(n_utt):
                X.append(c + off + rng.normal(size=dim) * noise)
                spk.append(f"s{seed}_{s:03d}")
                gen.append("m" if s % 2 else "f")
                emo.append(name)
    return np.array(X), np.array(spk), np.array(gen), np.array(emo), basis
