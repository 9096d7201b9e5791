"""Whole-utterance embedding by equal-length chunks (the x-vector's rule).

An utterance of ``T`` frames is cut into ``ceil(T / chunk_frames)`` nearly
equal chunks whose embeddings are averaged (one chunk for all but very long
utterances). Chunks are batched only with chunks of the *same* length, so no
padding ever enters the network: the result equals a direct
``net.embed(x[None])`` on each chunk.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch


def chunk_bounds(T: int, chunk_frames: int) -> list[tuple[int, int]]:
    n = max(1, math.ceil(T / chunk_frames))
    edges = np.linspace(0, T, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


@torch.no_grad()
def embed_in_chunks(net, mats: Sequence[np.ndarray], *, chunk_frames: int = 6000, batch_frames: int = 20000,
                    device: str | torch.device = "cpu", amp: torch.dtype | None = None) -> np.ndarray:
    """Embeddings ``(N, E)`` of ``N`` feature matrices ``(T_i, D)``."""
    device = torch.device(device)
    out = np.zeros((len(mats), net.embed_dim), dtype=np.float64)
    counts = np.zeros(len(mats))
    by_len: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for i, m in enumerate(mats):
        for a, b in chunk_bounds(len(m), chunk_frames):
            by_len[b - a].append((i, a, b))
    for L, items in by_len.items():
        per = max(1, batch_frames // max(L, 1))
        for k in range(0, len(items), per):
            part = items[k:k + per]
            x = torch.from_numpy(np.stack([mats[i][a:b] for i, a, b in part])).to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                e = net.embed(x).float().cpu().numpy()
            for (i, _, _), v in zip(part, e):
                out[i] += v
                counts[i] += 1
    return (out / counts[:, None]).astype(np.float32)
