"""Batched inference over many audio files: features per file, network in batches.

Stage 4 reads features made beforehand; inference starts from audio, so each
file's network input is computed first (by the model's front-end, in ``nj``
worker processes when ``nj > 1``, each a contiguous share of a block of files),
then a block's inputs go through the network together with stage 4's batching
(:func:`pyxv.extract.extract_embeddings`: utterances packed into rows on the
CPU, padded batches on a GPU). While one block is embedded the workers compute
the next one's features, so at most two blocks of features are held at a time.
Results come back in input order; a file that cannot be used (unreadable,
empty, too short) is a :class:`Result` with ``error`` set, and the others go on.

    maker = FeatureMaker(front)                          # picklable; one per worker
    for r in run(items, maker, embed_fn, nj=4, batch=256, timing=t):
        r.outputs            # (K, E) rows: 1 for a whole file, K segments
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger("pyxv.batch")


@dataclass
class Item:
    """One input: a ``wav.scp`` value (path or ``cmd |``) or samples, and what to
    cut from it: the whole file (default), uniform windows ``(window, hop)``, or
    listed segments ``[(seg-id, start, end)]`` (end -1: to the end)."""
    index: int
    name: str
    spec: str | None = None
    samples: np.ndarray | None = None
    sample_rate: int | None = None
    window: tuple[float, float] | None = None
    segments: list[tuple[str, float, float]] | None = None

    @property
    def label(self) -> str:
        """How messages name it: the path (or command), else the array's name."""
        return self.spec if self.spec is not None else f"array {self.name}"


@dataclass
class Result:
    """What became of one :class:`Item`. ``outputs`` (K, ...) in the order of
    ``bounds`` (``[(seg-id, start, end)]``; one row named after the file for a
    whole file); ``error`` when nothing of it could be used; ``segment_errors``
    one line per segment left out; ``notes`` one line per remark (e.g. a file
    shorter than one window)."""
    index: int
    name: str
    label: str
    outputs: np.ndarray | None = None
    bounds: list[tuple[str, float, float]] = field(default_factory=list)
    duration: float | None = None
    error: str | None = None
    segment_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    frames: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Timing:
    """Where the time of a batched run went (model loading not counted)."""
    files: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    frames: int = 0
    feature_seconds: float = 0.0   # summed over the files, in whichever process computed them
    feature_wait: float = 0.0      # the main process waiting for features (all of them when nj = 1)
    embed_seconds: float = 0.0     # network, in batches (stage 4's part)
    wall: float = 0.0
    workers: int = 1
    setup: float | None = None     # loading the model (on the CPU, and compiling its copy), when measured

    @staticmethod
    def _x(audio: float, secs: float) -> str:
        return f"{audio / secs:.1f} x real time" if secs > 0 else "- x real time"

    def lines(self) -> list[str]:
        a = self.audio_seconds
        return [f"timing: {self.files} files ({self.failed} failed), {a:.1f} s of audio, {self.frames} frames "
                f"({self.frames / 100:.1f} s at 100 frames/s) into the network",
                f"  features   {self.feature_seconds:8.3f} s  {self._x(a, self.feature_seconds)} per process "
                f"({self.workers} process{'es' if self.workers > 1 else ''}; {self.feature_wait:.2f} s waited for)",
                f"  embedding  {self.embed_seconds:8.3f} s  {self._x(a, self.embed_seconds)}; "
                f"{self._x(self.frames / 100, self.embed_seconds).replace(' real time', '')} per second of "
                f"network input",
                f"  total      {self.wall:8.3f} s  {self._x(a, self.wall)} (wall clock)"] + (
                [f"  start-up   {self.setup:8.3f} s  loading the model and preparing the network (not in the total)"]
                if self.setup is not None else [])


def one_line(err: BaseException | str, label: str, name: str = "") -> str:
    """The error as one line that names the file (prefixed when it does not)."""
    msg = " ".join(str(err).split()) or type(err).__name__
    if label not in msg and (not name or name not in msg):
        msg = f"{label}: {msg}"
    return msg


# --------------------------------------------------------------- features
class FeatureMaker:
    """The network input of an :class:`Item`, as a model's front-end makes it;
    sent once to each worker process (picklable).

    ``front``: a front-end of :mod:`pyxv.features.frontend`, or None with
    ``gemaps_norm`` set for eGeMAPS LLD networks (stage 2's extractor at the
    audio's own rate, standardised with the network's mean/std, or not).

    Segments: MFCC front-ends compute MFCC and VAD once per file and cut
    frames, then apply sliding CMN and voiced-frame selection per segment
    (Kaldi's sub-segmented feature dirs do the same); the others cut samples.
    A segment of one window over a whole file gives exactly the whole-file input.
    """

    def __init__(self, front=None, *, gemaps: bool = False, gemaps_norm=None):
        self.front, self.gemaps, self.gemaps_norm = front, gemaps, gemaps_norm
        self._gemaps_extractor = None

    # -- helpers
    @property
    def frame_based(self) -> bool:
        return not self.gemaps and hasattr(self.front, "raw")   # MfccVadFrontEnd

    def _mfcc_input(self, feats, vad, name, whole: bool) -> np.ndarray:
        """MfccVadFrontEnd.__call__ on given MFCC/VAD frames: CMN, voiced frames,
        all frames when fewer than min_frames are voiced."""
        from .features.network_input import xvector_input

        f = self.front
        x = xvector_input(feats, vad, f.cmn_window, f.apply_vad and vad is not None, name=name)
        if len(x) < f.min_frames:
            (log.warning if whole else log.debug)("%s: only %d voiced frames, using all %d frames",
                                                 name, len(x), len(feats))
            x = xvector_input(feats, None, f.cmn_window, False, name=name)
        return x

    def lld(self, x: np.ndarray, sr: int, name: str) -> np.ndarray:
        from .features.gemaps import Gemaps

        if self._gemaps_extractor is None:
            self._gemaps_extractor = Gemaps()
        L = np.nan_to_num(self._gemaps_extractor.both(x, sr)[0].astype(np.float32))
        if self.gemaps_norm is not None:
            L = (L - self.gemaps_norm[0]) / self.gemaps_norm[1]
        if len(L) == 0:
            raise ValueError(f"{name}: too short for one eGeMAPS frame")
        return L

    def _from_samples(self, x: np.ndarray, sr: int, name: str) -> np.ndarray:
        if self.gemaps:
            return self.lld(x, sr, name)
        return self.front.from_samples(x, sr, name=name)

    # -- one item
    def __call__(self, item: Item) -> tuple[list[np.ndarray], list[tuple[str, float, float]], float, list, list]:
        """``(inputs, bounds, duration, notes, segment_errors)``; raises when the file cannot be used."""
        tmp = None
        spec = item.spec
        try:
            if item.samples is not None and self.frame_based:
                # The MFCC front-end reads files: the samples go through a float WAV
                # (exact) so arrays and files take one path, resampling included.
                import soundfile as sf

                fd, tmp = tempfile.mkstemp(suffix=".wav", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
                os.close(fd)
                sf.write(tmp, _as_float(item.samples), int(item.sample_rate), subtype="FLOAT")
                spec = tmp
            if self.frame_based:
                return self._frames(item, spec)
            return self._samples(item, spec)
        finally:
            if tmp is not None:
                os.unlink(tmp)

    def _plan(self, item: Item, duration: float) -> tuple[list[tuple[str, float, float]], list[str], list[str]]:
        """(segments, notes, errors) of an item cut by ``segments`` or by ``window``
        (a whole file never comes here: its callers take it whole)."""
        from .segments import SegmentsError, clip_segment, segment_id, uniform_windows

        notes, errors = [], []
        if item.segments is not None:
            bounds = []
            for seg, s, e in item.segments:
                try:
                    bounds.append((seg, *clip_segment(seg, s, e, duration, item.label)))
                except SegmentsError as err:
                    errors.append(one_line(err, item.label, item.name))
            return bounds, notes, errors
        window, hop = item.window
        if duration < window:
            notes.append(f"{item.label}: {duration:.2f} s is shorter than the {window:g} s window: "
                         "one segment of its whole length")
        return [(segment_id(item.name, s, e), s, e) for s, e in uniform_windows(duration, window, hop)], notes, []

    def _frames(self, item: Item, spec: str):
        from .io import audio_duration

        feats, vad = self.front.raw(spec, item.name)
        shift = self.front.mfcc.opts.frame_shift / 1000.0
        # The header gives the exact length; a pipe would be read twice for it,
        # so there the frame count stands in (exact to half a frame, snip-edges false).
        duration = len(feats) * shift if spec.strip().endswith("|") else audio_duration(spec)
        if item.window is None and item.segments is None:
            return [self._mfcc_input(feats, vad, item.name, True)], [(item.name, 0.0, duration)], duration, [], []
        bounds, notes, errors = self._plan(item, duration)
        mats, kept = [], []
        for seg, s, e in bounds:
            a, b = int(round(s / shift)), min(len(feats), int(round(e / shift)))
            if b <= a:
                errors.append(f"{item.label}: segment {seg} ({s:.2f}-{e:.2f} s) is shorter than one "
                              f"{shift * 1000:g} ms frame")
                continue
            mats.append(self._mfcc_input(feats[a:b], None if vad is None else vad[a:b], seg, False))
            kept.append((seg, s, e))
        return mats, kept, duration, notes, errors

    def _samples(self, item: Item, spec: str | None):
        from .io import read_audio

        if item.samples is not None:
            x, sr = _as_float(item.samples) * 32768.0, int(item.sample_rate)   # read_audio's int16 scale
            if x.ndim > 1:
                x = x.mean(axis=1)
        else:
            x, sr = read_audio(spec, name=item.name)
        if len(x) == 0:
            raise ValueError(f"{item.label}: audio has no samples")
        duration = len(x) / sr
        if item.window is None and item.segments is None:
            return [self._from_samples(x, sr, item.name)], [(item.name, 0.0, duration)], duration, [], []
        bounds, notes, errors = self._plan(item, duration)
        mats, kept = [], []
        for seg, s, e in bounds:
            try:
                mats.append(self._from_samples(x[int(round(s * sr)):int(round(e * sr))], sr, seg))
                kept.append((seg, s, e))
            except Exception as err:   # noqa: BLE001 - one segment left out, named; the others go on
                errors.append(f"{item.label}: segment {seg} ({s:.2f}-{e:.2f} s): {one_line(err, seg)}")
        return mats, kept, duration, notes, errors


def _as_float(x) -> np.ndarray:
    """Samples as float32 on soundfile's scale ([-1, 1]); int16 arrays are scaled."""
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    return x.astype(np.float32, copy=False)


def _compute(maker: FeatureMaker, item: Item):
    t = time.perf_counter()
    try:
        mats, bounds, duration, notes, seg_errors = maker(item)
        for m in mats:
            if len(m) == 0:
                raise ValueError("no frames left for the network")
        if not mats:
            err = (f"{item.label}: none of its {len(bounds) + len(seg_errors)} segments could be used"
                   if item.window is not None or item.segments is not None else f"{item.label}: no input")
            return None, bounds, duration, notes, seg_errors, err, time.perf_counter() - t
        return mats, bounds, duration, notes, seg_errors, None, time.perf_counter() - t
    except Exception as e:   # noqa: BLE001 - a bad file is reported by name and the batch goes on
        return None, [], None, [], [], one_line(e, item.label, item.name), time.perf_counter() - t


_WORKER_MAKER: FeatureMaker | None = None


def _worker_init(maker: FeatureMaker) -> None:
    import torch

    global _WORKER_MAKER
    _WORKER_MAKER = maker
    torch.set_num_threads(1)   # each worker is one share of the files, one core
    # What reading audio imports on first use (scipy.signal for resampling: 1-3 s) is
    # imported here, at start-up, so the per-file figures are the files' own.
    import scipy.signal  # noqa: F401
    import soundfile  # noqa: F401

    from . import io  # noqa: F401
    from .features import network_input  # noqa: F401


def _worker_compute(share: list[Item]):
    return [_compute(_WORKER_MAKER, it) for it in share]


class _InProcess:
    """A block's features computed here, when asked for (nj = 1)."""

    def __init__(self, maker: FeatureMaker, block: list[Item]):
        self.maker, self.block = maker, block

    def get(self):
        return [_compute(self.maker, it) for it in self.block]


class FeatureWorkerError(RuntimeError):
    """A feature worker process died (killed, out of memory, a crash in native code)."""


class _Shares:
    """A block's features from the workers: each a contiguous share, joined in order."""

    def __init__(self, futures):
        self.futures = futures

    def get(self):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return [r for f in self.futures for r in f.result()]
        except BrokenProcessPool as e:
            raise FeatureWorkerError(f"a feature worker process died ({e}); run with --nj 1 (nj=1) to see why") from None


# ------------------------------------------------------------------ runner
def run(items: Sequence[Item], maker: FeatureMaker, embed_fn: Callable[[list[np.ndarray]], np.ndarray], *,
        nj: int = 1, batch: int = 256, timing: Timing | None = None) -> Iterator[Result]:
    """Yield a :class:`Result` per item in input order (see the module doc).
    ``embed_fn(inputs) -> (M, ...)``: the network on a list of inputs (one call
    per block of ``batch`` files, all their segments together)."""
    if nj < 1 or batch < 1:
        raise ValueError(f"nj {nj} and batch {batch} must be at least 1")
    timing = timing if timing is not None else Timing()
    t_start = time.perf_counter()
    blocks = [list(items[k:k + batch]) for k in range(0, len(items), batch)]
    workers = min(nj, len(items))
    pool = None
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a forked child of a process that has run torch's OpenMP can hang. An
        # executor, not mp.Pool: a worker that dies is an error here, not a silent restart loop.
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                   initargs=(maker,))
    timing.workers = max(1, workers)

    def submit(block):
        if pool is None:
            return _InProcess(maker, block)
        n = math.ceil(len(block) / workers)
        return _Shares([pool.submit(_worker_compute, block[k:k + n]) for k in range(0, len(block), n)])

    try:
        pending = submit(blocks[0]) if blocks else None
        for b, block in enumerate(blocks):
            t = time.perf_counter()
            outs = pending.get()
            timing.feature_wait += time.perf_counter() - t
            if b + 1 < len(blocks):
                pending = submit(blocks[b + 1])   # the workers go on while this block is embedded
            results, mats, owners = [], [], []
            for it, (m, bounds, duration, notes, seg_errors, err, secs) in zip(block, outs):
                r = Result(it.index, it.name, it.label, bounds=bounds, duration=duration, error=err,
                           segment_errors=seg_errors, notes=notes)
                timing.feature_seconds += secs
                timing.files += 1
                if err is None:
                    r.frames = sum(len(x) for x in m)
                    timing.audio_seconds += duration or 0.0
                    timing.frames += r.frames
                    mats += m
                    owners.append((len(results), len(m)))
                else:
                    timing.failed += 1
                results.append(r)
            if mats:
                t = time.perf_counter()
                out = np.asarray(embed_fn(mats))
                timing.embed_seconds += time.perf_counter() - t
                k = 0
                for i, n in owners:
                    results[i].outputs = out[k:k + n]
                    k += n
            timing.wall = time.perf_counter() - t_start
            yield from results
    finally:
        if pool is not None:   # done, an error, or the caller stopped early: queued shares are dropped
            pool.shutdown(wait=True, cancel_futures=True)
        timing.wall = time.perf_counter() - t_start
