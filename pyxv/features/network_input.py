"""The network's input features: computed, written once, and read back lazily.

- :func:`write_network_input` writes the network input once (for the ResNet
  :func:`xvector_input`: sliding CMN, then unvoiced frames removed, the idea of
  Kaldi's ``prepare_feats_for_egs.sh``; for other encoders their front-end's)
  into ark/scp plus ``utt2num_frames``.
- :class:`FeatureSource` reads utterance matrices through scp offsets (one
  utterance at a time, a small LRU cache), optionally applying CMN/VAD on the
  fly (e.g. ``gemaps_lld.scp`` with the MFCC ``vad.scp``); memory is bounded by
  the batch, never by the corpus. Training chunks of prepared (uncompressed)
  archives are read in place, only their rows (:mod:`pyxv.features.ark_rows`);
  :func:`chunk` is what such a read gives.
"""
from __future__ import annotations

import collections
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import kaldiio
import numpy as np

from ..io import read_table
from .ark_rows import ArkRows, RowIndex

log = logging.getLogger("pyxv.train")   # the trainer's logger: skipped utterances are reported in its log


def xvector_input(feats: np.ndarray, vad: np.ndarray | None, cmn_window: int = 300,
                  apply_vad: bool = True, name: str = "") -> np.ndarray:
    """Network input of one utterance: sliding CMN (window ``cmn_window``, 0: none)
    then, if ``apply_vad``, only the frames whose VAD value is > 0.5.

    ``feats`` (T, D) and ``vad`` (T,) may differ by a couple of frames (features
    of other extractors): both are cut to the shorter.
    """
    x = np.asarray(feats, dtype=np.float32)
    if cmn_window > 0:
        from .cmvn import apply_sliding_cmn  # Kaldi's apply-cmvn-sliding

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
        spec = self._spec(utt)
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
    from .archive import ArkScpWriter

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


def chunk(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` frames from ``start``; a shorter utterance is repeated to fill."""
    if len(x) >= start + length:
        return x[start:start + length]
    reps = -(-(start + length) // len(x))
    return np.concatenate([x] * reps)[start:start + length]
