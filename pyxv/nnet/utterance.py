"""Whole-utterance embedding by equal-length chunks (the x-vector's rule).

An utterance of ``T`` frames is cut into ``ceil(T / chunk_frames)`` nearly
equal chunks whose embeddings are averaged (one chunk for all but very long
utterances). Chunks are batched only with chunks of the *same* length, so no
padding ever enters the network: the result equals a direct
``net.embed(x[None])`` on each chunk.
"""
from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from ..device import input_device


def autocast(device: torch.device, amp: torch.dtype | None):
    """Mixed precision in ``amp`` on ``device``; without ``amp`` no autocast at
    all (torch.autocast, even disabled, knows only some device types)."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


def chunk_bounds(T: int, chunk_frames: int) -> list[tuple[int, int]]:
    n = max(1, math.ceil(T / chunk_frames))
    edges = np.linspace(0, T, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


@torch.no_grad()
def embed_in_chunks(net, mats: Sequence[np.ndarray], *, chunk_frames: int = 6000, batch_frames: int = 20000,
                    device: str | torch.device | None = None, amp: torch.dtype | None = None) -> np.ndarray:
    """Embeddings ``(N, E)`` of ``N`` feature matrices ``(T_i, D)``, computed on
    the model's device (``device``, when given, must be that one)."""
    device = input_device(net, device)
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
            with autocast(device, amp):
                e = net.embed(x).float().cpu().numpy()
            for (i, _, _), v in zip(part, e):
                out[i] += v
                counts[i] += 1
    return (out / counts[:, None]).astype(np.float32)


def pack_rows(lengths: Sequence[int], row_frames: int, align: int) -> list[list[tuple[int, int]]]:
    """Place pieces of ``lengths`` frames side by side in rows of at most
    ``row_frames`` frames (first fit, longest first): ``rows[r]`` lists
    ``(piece, offset)``. Each piece starts at a multiple of ``align`` (the
    trunk's time downsampling, so its frames fall on the same strided grid as
    alone) and is followed by at least ``align`` free frames (so at every
    resolution at least one zero frame separates it from the next piece). A
    piece longer than a row gets a row of its own."""
    need = [-(-n // align) * align + align for n in lengths]
    rows: list[list[tuple[int, int]]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-need[i], i)):
        for r, u in enumerate(used):
            if u + need[i] <= row_frames:
                rows[r].append((i, u))
                used[r] += need[i]
                break
        else:
            rows.append([(i, 0)])
            used.append(need[i])
    return rows


@torch.no_grad()
def embed_packed(frames_fn, embed_fn, mats: Sequence[np.ndarray], *, levels: int, chunk_frames: int = 6000,
                 row_frames: int = 1024, width_step: int = 64) -> np.ndarray:
    """Embeddings ``(N, E)`` of ``N`` feature matrices, the same as
    :func:`embed_in_chunks` gives (to float rounding), for a 2-D CNN trunk with
    ``levels`` time resolutions (each after the first halving time with
    stride-2 convs of kernel 3 or 1, padding 1 or 0).

    Chunks of different lengths share rows (:func:`pack_rows`), so a few input
    shapes serve every utterance: oneDNN sets up a convolution for each new input
    shape, and with one shape per utterance length that cost ~30 % of CPU
    extraction. A row is cut to a multiple of ``width_step`` frames past its last
    piece, which bounds the set of shapes (16 for rows of 1024 frames). Rows go
    through the network one at a time: rows of 1024 frames one at a time measured
    fastest on 2 cores (the activations stay in cache; 4 x 4096 was 10-20 % slower).

    ``frames_fn(x (1, T, F), masks)`` gives frame-level outputs ``(1, T / 2^(levels-1), C)``
    where ``masks[g]`` is the ``(1, 1, 1, T / 2^g)`` 0/1 map of the frames that
    belong to a piece; ``embed_fn([frames (1, T'_i, C)])`` embeds a list of pieces
    as ``(n, E)`` (one call for all: the embedding layer's weights are read once).
    """
    align = 2 ** (levels - 1)
    pieces = [(i, a, b) for i, m in enumerate(mats) for a, b in chunk_bounds(len(m), chunk_frames)]
    piece_frames: list[torch.Tensor] = []
    owner: list[int] = []
    for row in pack_rows([b - a for _, a, b in pieces], row_frames, align):
        end = max(off + pieces[p][2] - pieces[p][1] for p, off in row)
        width = -(-end // width_step) * width_step
        x = np.zeros((1, width, mats[0].shape[1]), dtype=np.float32)
        masks = [np.zeros((1, 1, 1, -(-width // 2 ** g)), dtype=np.float32) for g in range(levels)]
        for p, off in row:
            i, a, b = pieces[p]
            x[0, off:off + b - a] = mats[i][a:b]
            for g, m in enumerate(masks):
                m[0, 0, 0, off >> g:(off >> g) + -(-(b - a) >> g)] = 1.0
        frames = frames_fn(torch.from_numpy(x), [torch.from_numpy(m) for m in masks])
        for p, off in row:
            i, a, b = pieces[p]
            piece_frames.append(frames[:, off // align:off // align + -(-(b - a) // align)])
            owner.append(i)
    embs = embed_fn(piece_frames).float().numpy().astype(np.float64)
    out = np.zeros((len(mats), embs.shape[1]))
    np.add.at(out, owner, embs)
    return (out / np.bincount(owner, minlength=len(mats))[:, None]).astype(np.float32)
