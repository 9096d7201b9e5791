"""Kaldi ``compute-vad``: energy-based voice activity detection on MFCC c0.

With ``use-energy=true`` column 0 of the MFCC is the frame's log-energy. The
threshold is ``vad_energy_threshold + vad_energy_mean_scale * mean(log_energy)``;
frame t is speech (1.0) when at least ``vad_proportion_threshold`` of the frames
in ``[t - context, t + context]`` (clipped to the utterance) lie strictly above
it. Output: one float 0/1 per frame, as Kaldi's ``vad.scp`` vectors.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .kaldi_conf import parse_kaldi_conf


@dataclass
class VadOptions:
    """Kaldi ``VadEnergyOptions`` (defaults are Kaldi's, not the paper's conf)."""
    vad_energy_threshold: float = 5.0
    vad_energy_mean_scale: float = 0.5
    vad_frames_context: int = 0
    vad_proportion_threshold: float = 0.6
    omit_unvoiced_utts: bool = False

    def check(self) -> None:
        if self.vad_frames_context < 0:
            raise ValueError("--vad-frames-context must be >= 0")
        if not 0.0 < self.vad_proportion_threshold < 1.0:
            raise ValueError("--vad-proportion-threshold must be in (0, 1)")
        if self.vad_energy_mean_scale < 0.0:
            raise ValueError("--vad-energy-mean-scale must be >= 0")

    @classmethod
    def from_conf(cls, path) -> "VadOptions":
        """Read a Kaldi-syntax ``vad.conf``; unknown options raise naming file:line."""
        known = {f.name.replace("_", "-"): f.type for f in fields(cls)}
        opts = cls(**parse_kaldi_conf(path, {k: _conv(t) for k, t in known.items()},
                                      ignore=("verbose", "config")))
        opts.check()
        return opts


def _conv(t):
    return {"float": float, "int": int, "bool": bool}[t if isinstance(t, str) else t.__name__]


def compute_vad(feats: np.ndarray, opts: VadOptions | None = None) -> np.ndarray:
    """VAD decisions for MFCC ``feats`` (T, D) whose column 0 is log-energy -> (T,) float32 0/1."""
    opts = opts or VadOptions()
    opts.check()
    feats = np.asarray(feats)
    T = feats.shape[0]
    if T == 0:
        return np.zeros(0, dtype=np.float32)
    log_energy = feats[:, 0].astype(np.float32)
    thr = np.float32(opts.vad_energy_threshold)
    if opts.vad_energy_mean_scale != 0.0:
        thr = thr + np.float32(opts.vad_energy_mean_scale) * np.float32(log_energy.astype(np.float64).sum() / T)
    above = (log_energy > thr).astype(np.int64)
    c = opts.vad_frames_context
    cs = np.concatenate([[0], np.cumsum(above)])
    t = np.arange(T)
    lo = np.maximum(t - c, 0)
    hi = np.minimum(t + c + 1, T)
    num = cs[hi] - cs[lo]
    den = hi - lo
    return (num >= den * opts.vad_proportion_threshold).astype(np.float32)


def select_voiced(feats: np.ndarray, vad: np.ndarray) -> np.ndarray:
    """Keep the frames of ``feats`` (T, D) where ``vad`` (T,) > 0.5, as Kaldi's
    ``select-voiced-frames``; lengths must agree (off by one or two frames is an
    error, as in Kaldi)."""
    vad = np.asarray(vad).reshape(-1)
    if feats.shape[0] != vad.shape[0]:
        raise ValueError(f"features have {feats.shape[0]} frames but VAD has {vad.shape[0]}")
    return feats[vad > 0.5]


def compute_vad_torch(feats, opts: VadOptions | None = None):
    """:func:`compute_vad` in torch ops (traceable with a dynamic number of
    frames, for exported models): ``feats`` (T, D) tensor -> (T,) float32 0/1.
    The same arithmetic: the threshold in float32 from a float64 mean, the
    proportion test in float64."""
    import torch

    opts = opts or VadOptions()
    opts.check()
    T = feats.shape[0]
    log_energy = feats[:, 0].float()
    thr = torch.tensor(opts.vad_energy_threshold, dtype=torch.float32)
    if opts.vad_energy_mean_scale != 0.0:
        mean = (log_energy.double().sum() / T).float()
        thr = thr + torch.tensor(opts.vad_energy_mean_scale, dtype=torch.float32) * mean
    above = (log_energy > thr).long()
    cs = torch.cat([above.new_zeros(1), torch.cumsum(above, 0)])
    c = opts.vad_frames_context
    t = torch.arange(T, device=feats.device)
    lo = (t - c).clamp(min=0)
    hi = (t + c + 1).clamp(max=T)
    num = cs[hi] - cs[lo]
    den = (hi - lo).double()
    return (num.double() >= den * opts.vad_proportion_threshold).float()
