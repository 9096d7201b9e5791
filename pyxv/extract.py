"""x-vector extraction: whole utterances in, embeddings out (ark/scp).

How a whole utterance is embedded belongs to the encoder type
(``net.embed_utterances``): the ResNet averages equal-length chunks
(:mod:`pyxv.nnet.utterance`), GE2E averages 1.6 s partial windows.

    net, ck = pyxv.train.checkpoint.load_model("exp/xvector_clean/final.pt")
    for utt, vec in extract_embeddings(net, source, utts, chunk_frames=6000): ...
    post = utterance_posteriors(net, source, utts)     # (N, K) class posteriors

Inputs go to the model's own device (:func:`pyxv.device.input_device`): move the
network to a GPU and extraction runs there (the ResNet in padded batches of up
to ``batch_frames`` frames); an explicit ``device`` must agree. Running out of
memory there is an :class:`ExtractionMemoryError` naming the batch size.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .device import input_device

log = logging.getLogger("pyxv.extract")


class ExtractionMemoryError(RuntimeError):
    """The device ran out of memory; the message names the batch size and how to lower it."""


def embed_matrices(net, mats: Sequence[np.ndarray], *, chunk_frames: int = 6000, batch_frames: int = 20000,
                   device: str | torch.device | None = None, amp: torch.dtype | None = None,
                   batching: str = "auto") -> np.ndarray:
    """Embeddings ``(N, E)`` of ``N`` whole utterances ``(T_i, D)``, each encoder
    type in its own way (``net.embed_utterances``), on the model's device.
    ``batching``: how an ``XVectorNet`` batches chunks (``auto``: padded
    batches off the CPU); encoders with one way ignore it."""
    device = input_device(net, device)
    if len(mats) == 0:
        return np.zeros((0, net.embed_dim), dtype=np.float32)
    return net.embed_utterances(list(mats), chunk_frames=chunk_frames, batch_frames=batch_frames, device=device,
                                amp=amp, batching=batching)


def _load(source, utt: str, min_frames: int, raw_source=None) -> np.ndarray:
    x = source[utt]
    if len(x) < min_frames and raw_source is not None:
        y = raw_source[utt]
        log.warning("utterance %s: only %d voiced frames, using all %d frames", utt, len(x), len(y))
        x = y
    if len(x) == 0:
        raise ValueError(f"utterance {utt}: no frames")
    return x


def extract_embeddings(net, source, utts: Iterable[str], *, chunk_frames: int = 6000, batch_frames: int = 20000,
                       min_frames: int = 10, raw_source=None, device=None, block: int = 256,
                       stats: dict | None = None, batching: str = "auto") -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(utt, embedding)`` in input order; ``block`` utterances are read
    at a time (memory bound) and grouped by length inside the block. Unreadable
    utterances are logged, counted in ``stats['failed']`` and skipped.
    ``raw_source`` (features without VAD) is the fallback for utterances with
    fewer than ``min_frames`` voiced frames."""
    device = input_device(net, device)   # a mismatch fails here, before any reading
    net.eval()
    stats = {} if stats is None else stats
    stats.setdefault("done", 0)
    stats.setdefault("failed", 0)
    buf: list[tuple[str, np.ndarray]] = []

    def flush():
        if not buf:
            return []
        try:
            embs = embed_matrices(net, [m for _, m in buf], chunk_frames=chunk_frames,
                                  batch_frames=batch_frames, device=device, batching=batching)
        except torch.cuda.OutOfMemoryError:   # the name every torch has (torch.OutOfMemoryError: 2.5 on)
            raise ExtractionMemoryError(
                f"out of memory on {device} embedding batches of up to {batch_frames} frames: lower "
                f"--batch-frames (default: extract.batch_frames of the model's config), e.g. to "
                f"{max(1, batch_frames // 2)}") from None
        res = [(u, e) for (u, _), e in zip(buf, embs)]
        buf.clear()
        return res

    for utt in utts:
        try:
            buf.append((utt, _load(source, utt, min_frames, raw_source)))
        except Exception as e:
            log.warning("utterance %s: skipped: %s", utt, e)
            stats["failed"] += 1
            continue
        if len(buf) >= block:
            for r in flush():
                stats["done"] += 1
                yield r
    for r in flush():
        stats["done"] += 1
        yield r


@torch.no_grad()
def utterance_posteriors(net, source, utts: Sequence[str], *, chunk_frames: int = 6000, device=None,
                         **kw) -> tuple[list[str], np.ndarray]:
    """Class posteriors ``(N, K)`` of whole utterances: the (chunk-averaged)
    embedding through the output layer (plain logits, softmax), on the model's device."""
    device = input_device(net, device)
    keys, embs = [], []
    for u, e in extract_embeddings(net, source, utts, chunk_frames=chunk_frames, device=device, **kw):
        keys.append(u)
        embs.append(e)
    if not embs:
        return keys, np.zeros((0, net.num_classes), dtype=np.float32)
    was = net.training
    net.eval()
    e = torch.from_numpy(np.stack(embs)).to(device)
    post = torch.softmax(net.logits_from_embedding(e).float(), dim=-1).cpu().numpy()
    net.train(was)
    return keys, post


def write_embeddings(pairs: Iterable[tuple[str, np.ndarray]], ark: str | os.PathLike) -> int:
    """Write ``(key, vector)`` pairs to ``ark`` and its ``.scp``, both whole or
    neither (:class:`pyxv.features.archive.ArkScpWriter`; a write error raises
    :class:`pyxv.io.OutputError`). Returns the count."""
    from .features.archive import ArkScpWriter

    ark = str(ark)
    scp = ark[:-4] + ".scp" if ark.endswith(".ark") else ark + ".scp"
    with ArkScpWriter(ark, scp) as w:
        for k, v in pairs:
            w.write(k, np.asarray(v, dtype=np.float32))
    return len(w.entries)


def speaker_means(xvector_scp: str | os.PathLike, utt2spk: dict[str, str]) -> tuple[dict, dict]:
    """Mean x-vector per speaker and utterance counts (Kaldi's ``ivector-mean``)."""
    import kaldiio

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    for utt, v in kaldiio.load_scp_sequential(str(xvector_scp)):
        spk = utt2spk.get(utt)
        if spk is None:
            continue
        sums[spk] = sums.get(spk, 0) + np.asarray(v, dtype=np.float64)
        counts[spk] += 1
    return {s: (sums[s] / counts[s]).astype(np.float32) for s in sorted(sums)}, dict(counts)
