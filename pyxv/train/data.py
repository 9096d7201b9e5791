"""The training data of a run: the kept utterances, the validation split, and the
random-chunk batches of every epoch, read from a
:class:`~pyxv.features.network_input.FeatureSource`.

- :func:`filter_training_set` keeps utterances long enough and classes large
  enough; :func:`split_validation` holds some utterances of each class out.
- :class:`ChunkBatches` is the plan of one epoch: ``steps`` batches, each of
  one random chunk length in ``[chunk_min, chunk_max]`` with utterances drawn
  class-balanced (class, then utterance) or proportionally (utterance), random
  start offsets. It is a pure function of ``(seed, epoch)``, so a resumed run
  sees exactly the batches an uninterrupted one would.
- :class:`RunBatches` / :func:`training_loader`: every batch of a run keyed by
  ``(epoch, step)``, through one DataLoader whose workers live for the whole run.
"""
from __future__ import annotations

import collections
import logging
import signal
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from ..features.ark_rows import RowIndex
from ..features.network_input import FeatureSource

log = logging.getLogger("pyxv.train")


def filter_training_set(utt2label: Mapping[str, str], lengths: Mapping[str, int], *, min_frames: int,
                        min_utts_per_class: int) -> tuple[dict[str, str], dict]:
    """Keep utterances with features and ``>= min_frames`` frames, then classes
    with ``>= min_utts_per_class`` of them. Returns the kept map and counts."""
    missing = [u for u in utt2label if u not in lengths]
    short = [u for u in utt2label if u in lengths and lengths[u] < min_frames]
    kept = {u: l for u, l in utt2label.items() if u in lengths and lengths[u] >= min_frames}
    per = collections.Counter(kept.values())
    small = {c for c, n in per.items() if n < min_utts_per_class}
    out = {u: l for u, l in kept.items() if l not in small}
    info = {"missing_features": len(missing), "too_short": len(short), "classes_dropped": len(small),
            "utts_in_dropped_classes": sum(per[c] for c in small), "utts": len(out),
            "classes": len(set(out.values()))}
    if missing:
        log.warning("%d utterances have no features and are skipped (e.g. %s)", len(missing),
                    ", ".join(missing[:5]))
    return out, info


def split_validation(utt2label: Mapping[str, str], per_class: int, max_valid: int, seed: int) -> list[str]:
    """Hold out ``per_class`` utterances of each class that has at least
    ``per_class + 2`` (so training keeps some), at most ``max_valid`` in all."""
    rng = np.random.default_rng([seed, 99991])
    by = collections.defaultdict(list)
    for u, l in utt2label.items():
        by[l].append(u)
    valid = []
    for l in sorted(by):
        us = sorted(by[l])
        if per_class > 0 and len(us) >= per_class + 2:
            valid.extend(rng.choice(us, size=per_class, replace=False).tolist())
    if len(valid) > max_valid:
        valid = sorted(rng.choice(valid, size=max_valid, replace=False).tolist())
    return sorted(valid)


class ChunkBatches(torch.utils.data.Dataset):
    """The random-chunk batches of one epoch; item ``i`` is ``(x, y)`` with
    ``x (b, L, D)`` float32 and ``y (b,)`` int64 class indices.

    ``rank``/``world`` select this process's share of every global batch
    (samples ``rank::world``), so DDP with N processes sees the same global
    batches as one process.
    """

    def __init__(self, source: FeatureSource, utts: Sequence[str], labels: Sequence[int], lengths: Mapping[str, int],
                 *, batch_size: int, steps: int, chunk_min: int, chunk_max: int, sampling: str = "balanced",
                 seed: int = 0, epoch: int = 1, rank: int = 0, world: int = 1):
        self.source = source
        self._dim: int | None = None
        self._places: RowIndex | None | bool = None  # source.row_index(self.utts) once needed; False: none
        self.rank, self.world = rank, world
        self.utts = list(utts)
        labels = np.asarray(labels)
        self.labels = labels
        lens = np.fromiter(map(lengths.__getitem__, self.utts), dtype=np.int64, count=len(self.utts))
        rng = np.random.default_rng([seed, epoch])
        # Utterances of each class in index order, found by one stable sort (not a
        # scan per class: that is classes x utterances at VoxCeleb scale).
        classes, inverse = np.unique(labels, return_inverse=True)
        by_class = np.argsort(inverse, kind="stable")
        class_size = np.bincount(inverse, minlength=len(classes))
        class_start = np.concatenate([[0], np.cumsum(class_size)[:-1]])
        # The draws are those of one scalar draw per chunk (integers() with an
        # array of bounds consumes the generator exactly as the scalar calls
        # did), so plans, and trained models, are unchanged for a seed.
        self.chunk_lengths = np.empty(steps, dtype=np.int64)
        self.index = np.empty((steps, batch_size), dtype=np.int64)
        self.starts = np.empty((steps, batch_size), dtype=np.int64)
        for k in range(steps):
            L = int(rng.integers(chunk_min, chunk_max + 1))
            if sampling == "balanced":
                cls = rng.integers(0, len(classes), size=batch_size)
                idx = by_class[class_start[cls] + rng.integers(0, class_size[cls])]
            else:
                idx = rng.integers(0, len(self.utts), size=batch_size)
            self.chunk_lengths[k] = L
            self.index[k] = idx
            self.starts[k] = (rng.random(batch_size) * np.maximum(lens[idx] - L + 1, 1)).astype(np.int64)

    @property
    def plan(self) -> list[tuple[int, list[tuple[str, int, int]]]]:
        """Every batch as ``(chunk length, [(utterance, start, label), ...])``."""
        return [self._batch(i) for i in range(len(self))]

    def _batch(self, i: int) -> tuple[int, list[tuple[str, int, int]]]:
        idx = self.index[i].tolist()
        return int(self.chunk_lengths[i]), [(self.utts[j], s, y) for j, s, y in
                                      zip(idx, self.starts[i].tolist(), self.labels[idx].tolist())]

    def __len__(self) -> int:
        return len(self.chunk_lengths)

    def __getitem__(self, i: int):
        L = int(self.chunk_lengths[i])
        idx, starts = self.index[i, self.rank::self.world], self.starts[i, self.rank::self.world]
        if self._dim is None:
            self._dim = self.source.dim
        if self._places is None:
            self._places = self.source.row_index(self.utts) or False
        x = torch.empty((len(idx), L, self._dim), dtype=torch.float32)
        if torch.utils.data.get_worker_info() is not None:
            x.share_memory_()  # in a loader worker: the batch is read where the training process will map it, no copy
        out = x.numpy()
        # each chunk read straight into its row; those not in place (compressed, CMN/VAD on the fly,
        # shorter than L) decoded one by one
        left = self._places.read(idx, starts, out) if self._places else range(len(idx))
        for k in left:
            self.source.read_chunk(self.utts[idx[k]], int(starts[k]), L, out=out[k])
        return x, torch.from_numpy(self.labels[idx].astype(np.int64))


class RunBatches(torch.utils.data.Dataset):
    """Every training batch of a run: item ``(epoch, step)`` is ``ChunkBatches(...,
    epoch=epoch)[step]``. The epoch's plan is built where the item is read (in a
    DataLoader worker: once per worker and epoch, a pure function of seed and
    epoch), so one loader, and its workers, serve all epochs, and the next epoch's
    first batches are read while the last one is validated."""

    def __init__(self, source: FeatureSource, utts: Sequence[str], labels: Sequence[int],
                 lengths: Mapping[str, int], *, batch_size: int, steps: int, chunk_min: int, chunk_max: int,
                 sampling: str = "balanced", seed: int = 0, rank: int = 0, world: int = 1):
        self.source, self.utts, self.labels, self.lengths = source, utts, labels, lengths
        self.steps = steps
        self._plan_args = dict(batch_size=batch_size, steps=steps, chunk_min=chunk_min, chunk_max=chunk_max,
                               sampling=sampling, seed=seed, rank=rank, world=world)
        self._epoch: tuple[int, ChunkBatches] | None = None

    def epoch(self, epoch: int) -> ChunkBatches:
        if self._epoch is None or self._epoch[0] != epoch:
            batches = ChunkBatches(self.source, self.utts, self.labels, self.lengths, epoch=epoch, **self._plan_args)
            if self._epoch is not None:
                batches._places = self._epoch[1]._places  # the same utterances: their places learnt once per run
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def __getitem__(self, key: tuple[int, int]):
        epoch, step = key
        return self.epoch(epoch)[step]


class RunKeys(torch.utils.data.Sampler):
    """The ``(epoch, step)`` keys from ``start`` (the first batch not done) to the
    end of epoch ``epochs``, in training order."""

    def __init__(self, start: tuple[int, int], epochs: int, steps: int):
        self.start, self.epochs, self.steps = start, epochs, steps

    def __iter__(self):
        e0, s0 = self.start
        for e in range(e0, self.epochs + 1):
            for s in range(s0 if e == e0 else 0, self.steps):
                yield e, s

    def __len__(self) -> int:
        e0, s0 = self.start
        return max(0, (self.epochs - e0 + 1) * self.steps - s0)


def training_loader(batches: RunBatches, *, start: tuple[int, int] = (1, 0), epochs: int, num_workers: int = 0,
                    prefetch_factor: int = 4, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The trainer's loader of ``batches`` from ``start`` = (epoch, steps done in it)
    to the end of training: ``num_workers`` processes (0: read in the calling one),
    each ``prefetch_factor`` batches ahead, alive for the whole run;
    ``pin_memory`` (for a CUDA device) lets the copy to the GPU overlap compute."""
    more = dict(persistent_workers=True, prefetch_factor=prefetch_factor,
                worker_init_fn=_leave_stop_signals_to_trainer) if num_workers > 0 else {}
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=RunKeys(start, epochs, batches.steps),
                                       num_workers=num_workers, pin_memory=pin_memory, **more)


def _leave_stop_signals_to_trainer(worker_id: int) -> None:
    """A batch system may send SIGTERM/SIGUSR1 to every process of the job: a
    loader worker ignores them (it would die of them, and the training process
    fail on that) and is stopped by the training process, at its agreed step."""
    from ..parallel.preemption import STOP_SIGNALS

    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def default_steps(lengths: Iterable[int], batch_size: int, chunk_min: int, chunk_max: int) -> int:
    """Steps so that one epoch sees about every voiced frame once."""
    total = sum(lengths)
    return max(1, int(round(total / ((chunk_min + chunk_max) / 2) / batch_size)))
