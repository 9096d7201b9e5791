"""Acoustic features: Kaldi-exact MFCC, energy VAD, sliding CMN, eGeMAPS.

``prepare_xvector_input`` is the one function the x-vector code (training,
extraction, inference) uses to turn raw MFCC + VAD into network input, in
Kaldi's order (``prepare_feats_for_egs.sh``): sliding CMN over all frames, then
keep the voiced frames.
"""
from __future__ import annotations

import numpy as np

from .cmvn import apply_sliding_cmn
from .vad import VadOptions, compute_vad, select_voiced

__all__ = ["apply_sliding_cmn", "compute_vad", "select_voiced", "VadOptions",
           "prepare_feats", "prepare_xvector_input", "compute_wav_features"]


def prepare_feats(feats: np.ndarray, vad: np.ndarray | None, *, window: int = 300,
                  center: bool = True, norm_vars: bool = False, min_window: int = 100) -> np.ndarray:
    """Sliding CMN on all frames of ``feats`` (T, D), then drop frames whose ``vad``
    (T,) is 0 -> (T', D) float32. ``vad=None`` keeps every frame."""
    out = apply_sliding_cmn(feats, window=window, center=center, norm_vars=norm_vars,
                            min_window=min_window)
    if vad is None:
        return out
    return select_voiced(out, vad)


def prepare_xvector_input(mfcc: np.ndarray, vad: np.ndarray) -> np.ndarray:
    """x-vector network input from raw MFCC (T, D) and VAD (T,): Kaldi's
    ``apply-cmvn-sliding --norm-vars=false --center=true --cmn-window=300`` then
    ``select-voiced-frames`` -> (T', D) float32."""
    return prepare_feats(mfcc, vad)


def compute_wav_features(wav_spec: str, mfcc_conf, vad_conf, *, seed: int = 0,
                         dither: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw MFCC (T, D) and VAD (T,) of one ``wav.scp`` value (path or ``cmd |``)
    exactly as steps/make_mfcc.sh + compute_vad.sh make them (resampled to the
    conf's rate; ``seed`` as the step's ``utt_seed(0, utt)`` for identical dither).
    For inference on a new file: ``prepare_xvector_input(*compute_wav_features(...))``."""
    from ..io import read_audio
    from .mfcc import Mfcc

    mfcc = Mfcc.from_conf(mfcc_conf)
    x, _ = read_audio(wav_spec, sample_rate=mfcc.sample_rate)
    feats = mfcc(x, seed=seed, dither=dither)
    return feats, compute_vad(feats, VadOptions.from_conf(vad_conf))
