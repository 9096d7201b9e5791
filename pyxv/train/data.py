"""Features for training and extraction, and the random-chunk batches of an epoch.

- :func:`write_network_input` writes the network input once (for the ResNet
  :func:`xvector_input`: sliding CMN, then unvoiced frames removed, the idea of
  Kaldi's ``prepare_feats_for_egs.sh``; for other encoders their front-end's)
  into ark/scp plus ``utt2num_frames``.
- :class:`FeatureSource` reads utterance matrices through scp offsets (one
  utterance at a time, a small LRU cache), optionally applying CMN/VAD on the
  fly (e.g. ``gemaps_lld.scp`` with the MFCC ``vad.scp``); memory is bounded by
  the batch, never by the corpus. Training chunks of prepared (uncompressed)
  archives are read in place, only their rows (:mod:`pyxv.features.ark_rows`).
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
import os
import signal
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import kaldiio
import numpy as np
import torch

from ..features.ark_rows import ArkRows, RowIndex
from ..io import read_table

log = logging.getLogger("pyxv.train")


def xvector_input(feats: np.ndarray, vad: np.ndarray | None, cmn_window: int = 300,
                  apply_vad: bool = True, name: str = "") -> np.ndarray:
    """Network input of one utterance: sliding CMN (window ``cmn_window``, 0: none)
    then, if ``apply_vad``, only the frames whose VAD value is > 0.5.

    ``feats`` (T, D) and ``vad`` (T,) may differ by a couple of frames (features
    of other extractors): both are cut to the shorter.
    """
    x = np.asarray(feats, dtype=np.float32)
    if cmn_window > 0:
        from ..features.cmvn import apply_sliding_cmn  # helper of pyxv.features (Kaldi apply-cmvn-sliding)

        x = apply_sliding_cmn(x, window=cmn_window)
    if apply_vad and vad is not None:
        v = np.asarray(vad).reshape(-1)
        n = min(len(v), len(x))
        if abs(len(v) - len(x)) > 3:
            raise ValueError(f"utterance {name}: {len(x)} feature frames but {len(v)} VAD frames")
        x = x[:n][v[:n] > 0.5]
    return np.ascontiguousarray(x, dtype=np.float32)


class FeatureSource:
    """Utterance feature matrices from a Kaldi scp, read lazily through offsets.

    ``source[utt]`` -> ``(T, D)`` float32 array. ``lengths`` gives frames per
    utterance (after VAD when applied): from ``utt2num_frames`` when given (the
    prepared archives have one), otherwise measured once by reading.

    >>> src = FeatureSource("exp/xvector_clean/feats/feats.scp", utt2num_frames=".../utt2num_frames")
    >>> raw = FeatureSource("data/demo/all/gemaps_lld.scp", vad_scp="data/demo/all/vad.scp", cmn_window=300)
    """

    def __init__(self, scp: str | os.PathLike, *, vad_scp: str | os.PathLike | None = None,
                 cmn_window: int = 0, apply_vad: bool | None = None,
                 utt2num_frames: str | os.PathLike | Mapping[str, int] | None = None, cache: int = 64):
        self.scp = str(scp)
        self.table = read_table(scp)
        self.vad = read_table(vad_scp) if vad_scp else None
        self.cmn_window = cmn_window
        self.apply_vad = (vad_scp is not None) if apply_vad is None else apply_vad
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cache_size = cache
        self._rows = ArkRows()   # chunk reads in place (prepared, untransformed archives)
        self._lengths: dict[str, int] | None = None
        if utt2num_frames is not None:
            if isinstance(utt2num_frames, Mapping):
                self._lengths = {u: int(n) for u, n in utt2num_frames.items()}
            else:
                self._lengths = {u: int(n) for u, n in read_table(utt2num_frames).items()}

    @property
    def transformed(self) -> bool:
        return self.cmn_window > 0 or (self.apply_vad and self.vad is not None)

    @property
    def in_place(self) -> bool:
        """Chunks can be read from the archive as it is: no CMN/VAD on the fly, and ``load``
        not replaced on this object (a wrapped ``load``, e.g. a standardisation, must see them)."""
        return not self.transformed and "load" not in vars(self)

    def __contains__(self, utt: str) -> bool:
        return utt in self.table and (not self.apply_vad or self.vad is None or utt in self.vad)

    def keys(self) -> list[str]:
        return [u for u in self.table if u in self]

    def __getitem__(self, utt: str) -> np.ndarray:
        if utt in self._cache:
            self._cache.move_to_end(utt)
            return self._cache[utt]
        x = self.load(utt)
        if self._cache_size > 0:
            self._cache[utt] = x
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return x

    def load(self, utt: str) -> np.ndarray:
        if utt not in self.table:
            raise KeyError(f"{self.scp}: no features for utterance {utt}")
        spec = self.table[utt]
        try:
            x = np.asarray(kaldiio.load_mat(spec), dtype=np.float32)
        except OSError:
            raise  # names the file already (a missing ark: FileNotFoundError, as the callers expect)
        except Exception as e:  # kaldiio's format errors do not say which file
            raise ValueError(f"{self.scp}: utterance {utt} ({spec}): unreadable matrix: {e}") from e
        if x.ndim == 1:
            x = x[None, :]
        if self.transformed:
            vad = None
            if self.apply_vad and self.vad is not None:
                if utt not in self.vad:
                    raise KeyError(f"no VAD for utterance {utt}")
                vad = kaldiio.load_mat(self.vad[utt])
            x = xvector_input(x, vad, self.cmn_window, self.apply_vad, name=utt)
        return x

    def read_chunk(self, utt: str, start: int, length: int, out: np.ndarray | None = None) -> np.ndarray:
        """``chunk(self[utt], start, length)``, into ``out`` when given. Prepared archives
        (uncompressed, no CMN/VAD on the fly) give just the chunk's rows (:class:`ArkRows`);
        other sources, and chunks that wrap around a short utterance, decode the utterance."""
        if self.in_place:
            lay = self._rows.layout(self._spec(utt))
            if lay is not None:
                buf = np.empty((length, lay[3]), np.float32) if out is None else out
                if self._rows.read_rows(lay, start, buf):
                    return buf
        x = chunk(self[utt], start, length)
        if out is None:
            return x
        out[...] = x
        return out

    def read_chunks(self, utts: Sequence[str], starts: Sequence[int], length: int, out: np.ndarray) -> np.ndarray:
        """``out[k] = chunk(self[utts[k]], starts[k], length)`` for a batch ``out`` (B, length, D):
        the chunks of prepared archives read together (:meth:`ArkRows.read_chunks`), the rest one by one."""
        left = range(len(utts))
        if self.in_place:
            left = self._rows.read_chunks([self._spec(u) for u in utts], starts, out)
        for k in left:
            self.read_chunk(utts[k], int(starts[k]), length, out=out[k])
        return out

    def row_index(self, utts: Sequence[str]) -> RowIndex | None:
        """Where the rows of ``utts`` are, looked up by position (:class:`RowIndex`); None when no
        chunk can be read in place (:attr:`in_place`)."""
        return self._rows.index([self._spec(u) for u in utts]) if self.in_place else None

    def _spec(self, utt: str) -> str:
        spec = self.table.get(utt)
        if spec is None:
            raise KeyError(f"{self.scp}: no features for utterance {utt}")
        return spec

    @property
    def dim(self) -> int:
        return int(self[next(u for u in self.table if u in self)].shape[1])

    @property
    def lengths(self) -> dict[str, int]:
        if self._lengths is None:
            lens = {}
            for u in self.keys():
                try:
                    lens[u] = int(self.load(u).shape[0])
                except Exception as e:  # one bad utterance: reported, skipped
                    log.warning("skipping utterance %s: %s", u, e)
            self._lengths = lens
        return self._lengths


def write_network_input(utts: Sequence[str], compute, out_dir: str | os.PathLike, name: str, *,
                        min_frames: int = 1) -> dict:
    """``compute(utt) -> (T, D)`` for each of ``utts`` into ``out_dir/name.ark`` +
    ``.scp`` and ``name.utt2num_frames`` (whole or not at all: temporary names,
    then renamed). An utterance whose ``compute`` raises, or shorter than
    ``min_frames``, is reported in the log and skipped. Returns counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = collections.Counter()
    # ark, scp and utt2num_frames appear together or not at all; a write error
    # (disk full ...) raises pyxv.io.OutputError and leaves none of them.
    from ..features.archive import ArkScpWriter

    with ArkScpWriter(out_dir / f"{name}.ark", out_dir / f"{name}.scp",
                      num_frames=out_dir / f"{name}.utt2num_frames") as w:
        for i, utt in enumerate(utts, 1):
            try:
                x = compute(utt)
            except Exception as e:
                log.warning("utterance %s: skipped: %s", utt, e)
                stats["bad"] += 1
                continue
            if len(x) < min_frames:
                stats["short"] += 1
                continue
            w.write(utt, x)
            stats["ok"] += 1
            if i % 500 == 0:
                log.info("prepared %d/%d utterances", i, len(utts))
    log.info("prepared %d utterances (%d unreadable, %d shorter than %d frames)",
             stats["ok"], stats["bad"], stats["short"], min_frames)
    return dict(stats)


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


def chunk(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` frames from ``start``; a shorter utterance is repeated to fill."""
    if len(x) >= start + length:
        return x[start:start + length]
    reps = -(-(start + length) // len(x))
    return np.concatenate([x] * reps)[start:start + length]


def default_steps(lengths: Iterable[int], batch_size: int, chunk_min: int, chunk_max: int) -> int:
    """Steps so that one epoch sees about every voiced frame once."""
    total = sum(lengths)
    return max(1, int(round(total / ((chunk_min + chunk_max) / 2) / batch_size)))
