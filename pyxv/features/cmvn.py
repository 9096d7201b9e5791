"""Kaldi ``apply-cmvn-sliding``: sliding-window cepstral mean (and variance) normalisation.

Window placement follows Kaldi's ``SlidingWindowCmnInternal``
(src/feat/feature-functions.cc):

- centred (default): frames ``[t - window//2, t - window//2 + window)``, shifted
  right at the start and left at the end so that it stays inside the utterance
  (an utterance shorter than the window uses all its frames);
- not centred: frames ``[max(0, t - window), max(t + 1, min_window))``, then
  clipped to the utterance.

Statistics are accumulated in float64 as Kaldi does; with ``norm_vars`` the
variance is floored at 1e-10 and a one-frame window gives zeros.
"""
from __future__ import annotations

import numpy as np


def sliding_windows(num_frames: int, window: int = 300, center: bool = True,
                    min_window: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) frame of each frame's CMN window, shapes (T,)."""
    if window <= 0:
        raise ValueError(f"cmn window must be positive, got {window}")
    t = np.arange(num_frames, dtype=np.int64)
    if center:
        start = t - window // 2
        end = start + window
    else:
        start = t - window
        end = t + 1
    shift = np.where(start < 0, -start, 0)          # shift right if it starts before 0
    start = start + shift
    end = end + shift
    if not center:
        end = np.where(end > t, np.maximum(t + 1, min_window), end)
    over = np.maximum(end - num_frames, 0)          # shift left if it ends after T
    start = np.maximum(start - over, 0)
    end = end - over
    return start, end


def apply_sliding_cmn(feats: np.ndarray, window: int = 300, center: bool = True,
                      norm_vars: bool = False, min_window: int = 100) -> np.ndarray:
    """Sliding-window CMN of ``feats`` (T, D) -> (T, D) float32, as Kaldi's
    ``apply-cmvn-sliding --cmn-window=window --center=center --norm-vars=norm_vars
    --min-cmn-window=min_window``."""
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise ValueError(f"features must be a (frames, dim) matrix, got shape {feats.shape}")
    T = feats.shape[0]
    if T == 0:
        return feats.astype(np.float32, copy=True)
    x = feats.astype(np.float64)
    start, end = sliding_windows(T, window, center, min_window)
    n = (end - start).astype(np.float64)[:, None]
    cs = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    total = cs[end] - cs[start]
    out = x - total / n
    if norm_vars:
        cs2 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x * x, axis=0)])
        var = (cs2[end] - cs2[start]) / n - (total / n) ** 2
        var = np.maximum(var, 1.0e-10)
        out = out / np.sqrt(var)
        out[(end - start) == 1] = 0.0
    return out.astype(np.float32)


def apply_sliding_cmn_torch(feats, window: int = 300, center: bool = True, norm_vars: bool = False,
                            min_window: int = 100):
    """:func:`apply_sliding_cmn` in torch ops (traceable with a dynamic number of
    frames, for exported models): ``feats`` (T, D) tensor -> (T, D) float32, the
    windows of :func:`sliding_windows` and the statistics in float64."""
    import torch

    if window <= 0:
        raise ValueError(f"cmn window must be positive, got {window}")
    T = feats.shape[0]
    x = feats.double()
    t = torch.arange(T, device=feats.device)
    if center:
        start = t - window // 2
        end = start + window
    else:
        start = t - window
        end = t + 1
    shift = (-start).clamp(min=0)                   # shift right if it starts before 0
    start = start + shift
    end = end + shift
    if not center:
        end = torch.where(end > t, (t + 1).clamp(min=min_window), end)
    over = (end - T).clamp(min=0)                   # shift left if it ends after T
    start = (start - over).clamp(min=0)
    end = end - over
    n = (end - start).double()[:, None]
    cs = torch.cat([x.new_zeros(1, x.shape[1]), torch.cumsum(x, 0)])
    total = cs[end] - cs[start]
    out = x - total / n
    if norm_vars:
        cs2 = torch.cat([x.new_zeros(1, x.shape[1]), torch.cumsum(x * x, 0)])
        var = ((cs2[end] - cs2[start]) / n - (total / n) ** 2).clamp(min=1.0e-10)
        out = torch.where((end - start == 1)[:, None], torch.zeros_like(out), out / var.sqrt())
    return out.float()
