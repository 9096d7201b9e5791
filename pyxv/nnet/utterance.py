"""Whole-utterance embedding by equal-length chunks (the x-vector's rule).

An utterance of ``T`` frames is cut into ``ceil(T / chunk_frames)`` nearly
equal chunks whose embeddings are averaged (one chunk for all but very long
utterances). Three ways to batch the chunks, all giving what a direct
``net.embed(x[None])`` on each chunk gives (to float rounding):

- :func:`embed_in_chunks`: only chunks of the *same* length share a batch, so
  no padding enters the network (with real lengths: about one chunk a batch);
- :func:`embed_padded` (off the CPU): chunks sorted by length share batches of
  up to ``batch_frames`` frames, zero-padded to the batch's longest; masks keep
  the padding zero at every time resolution and out of the pooling;
- :func:`embed_packed` (the CPU's compiled copy, :mod:`pyxv.nnet.cpu_embedder`):
  chunks side by side in rows of one width.
"""
from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from ..device import input_device


BATCHING = ("auto", "padded", "equal")


def autocast(device: torch.device, amp: torch.dtype | None):
    """Mixed precision in ``amp`` on ``device``; without ``amp`` no autocast at
    all (torch.autocast, even disabled, knows only some device types)."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


@contextlib.contextmanager
def full_fp32(device: torch.device):
    """On a GPU, convolutions, RNNs and matrix products in full float32 while
    inside (the earlier settings come back after): torch lets cuDNN use TF32
    by default, whose 10-bit mantissa moves embeddings by ~1e-3 relative, where
    extraction must agree with the CPU to 1e-4."""
    if device.type != "cuda":
        yield
        return
    b = torch.backends
    if hasattr(getattr(b.cudnn, "conv", None), "fp32_precision"):   # torch >= 2.9; refuses the old flags mixed in
        flags = [(b.cudnn.conv, "fp32_precision", "ieee"), (b.cudnn.rnn, "fp32_precision", "ieee"),
                 (b.cuda.matmul, "fp32_precision", "ieee")]
    else:
        flags = [(b.cudnn, "allow_tf32", False), (b.cuda.matmul, "allow_tf32", False)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in flags]
    try:
        for obj, name, value in flags:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """``x`` on ``device`` without waiting for it: to a GPU through pinned memory
    (non-blocking; a copy from pageable memory first waits for every queued
    kernel, a host sync per batch)."""
    t = torch.from_numpy(x)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def embed_utterances(net, mats: Sequence[np.ndarray], *, chunk_frames: int = 6000, batch_frames: int = 20000,
                     device: str | torch.device | None = None, amp: torch.dtype | None = None,
                     batching: str = "auto") -> np.ndarray:
    """Embeddings ``(N, E)`` of an x-vector network's ``N`` whole utterances,
    batched as ``batching`` says (see ``XVectorNet.embed_utterances``)."""
    if batching not in BATCHING:
        raise ValueError(f"batching '{batching}' is not one of {', '.join(BATCHING)}")
    device = input_device(net, device)
    if batching == "padded" or (batching == "auto" and device.type != "cpu"):
        return embed_padded(net, mats, chunk_frames=chunk_frames, batch_frames=batch_frames, device=device, amp=amp)
    return embed_in_chunks(net, mats, chunk_frames=chunk_frames, batch_frames=batch_frames, device=device, amp=amp)


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


def frame_masks(lengths: torch.Tensor, width: int, levels: int, dtype=torch.float32) -> list[torch.Tensor]:
    """``levels`` 0/1 masks ``(B, 1, 1, ceil(width / 2^g))`` of rows of
    ``lengths`` frames (``(B,)``, on the device), each starting at frame 0: at
    resolution ``g`` a row has ``ceil(length / 2^g)`` frames, as many as the
    trunk makes of it alone (stride-2 convs of kernel 3 or 1, padding 1 or 0)."""
    masks = []
    for g in range(levels):
        n = (lengths + (2 ** g - 1)) >> g
        t = torch.arange(-(-width // 2 ** g), device=lengths.device)
        masks.append((t[None, :] < n[:, None]).to(dtype)[:, None, None, :])
    return masks


@torch.no_grad()
def embed_padded(net, mats: Sequence[np.ndarray], *, chunk_frames: int = 6000, batch_frames: int = 20000,
                 device: str | torch.device | None = None, amp: torch.dtype | None = None) -> np.ndarray:
    """Embeddings ``(N, E)`` of ``N`` feature matrices, the same as
    :func:`embed_in_chunks` gives (to float rounding), with chunks of different
    lengths in one batch: for an :class:`~pyxv.nnet.xvector.XVectorNet` on a GPU.

    Chunks go longest first; a batch takes as many as fit ``batch_frames``
    frames at the width of its first (longest) one, rounded up to the trunk's
    time downsampling. Each row is zero-padded; ``net.embed(x, masks)`` re-zeroes
    the padding after every conv (so a chunk sees the zeros it sees alone) and
    leaves it out of the pooling. Inputs reach the device through pinned memory
    and embeddings are summed there: one host sync for the whole call, none per
    batch. On a GPU in full float32 unless ``amp`` (:func:`full_fp32`).
    """
    device = input_device(net, device)
    levels = len(net.trunk.layers)
    align = 2 ** (levels - 1)
    empty = [i for i, m in enumerate(mats) if len(m) == 0]
    if empty:
        raise ValueError(f"utterance {empty[0]} of {len(mats)} has no frames")
    pieces = [(i, a, b) for i, m in enumerate(mats) for a, b in chunk_bounds(len(m), chunk_frames)]
    order = sorted(range(len(pieces)), key=lambda p: (pieces[p][1] - pieces[p][2], p))
    out = torch.zeros(len(mats), net.embed_dim, dtype=torch.float64, device=device)
    mask_dtype = amp or torch.float32
    k = 0
    with full_fp32(device) if amp is None else contextlib.nullcontext(), autocast(device, amp):
        while k < len(order):
            width = -(-(pieces[order[k]][2] - pieces[order[k]][1]) // align) * align
            batch = [pieces[p] for p in order[k:k + max(1, batch_frames // width)]]
            k += len(batch)
            x = np.zeros((len(batch), width, net.input_dim), dtype=np.float32)
            meta = np.zeros((2, len(batch)), dtype=np.int64)   # lengths, owners: one copy
            for r, (i, a, b) in enumerate(batch):
                x[r, :b - a] = mats[i][a:b]
                meta[:, r] = (b - a, i)
            meta_d = to_device(meta, device)
            e = net.embed(to_device(x, device), frame_masks(meta_d[0], width, levels, mask_dtype))
            out.index_add_(0, meta_d[1], e.double())
    counts = np.bincount([i for i, _, _ in pieces], minlength=len(mats))
    return (out.cpu().numpy() / counts[:, None]).astype(np.float32)


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
