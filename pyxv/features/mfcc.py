"""Kaldi ``compute-mfcc-feats``, vectorised in torch over frames and utterances.

Follows Kaldi's feature-window.cc / mel-computations.cc / feature-mfcc.cc step by
step, per frame: dither (Gaussian, ``dither`` x N(0,1), from a seeded generator),
DC removal, raw log-energy, pre-emphasis (``x[0] -= c x[0]``), window, zero-pad
to a power of two, power spectrum, triangular mel banks on the mel scale
``1127 ln(1 + f/700)`` (the Nyquist bin unused), log (floored at float epsilon),
DCT-II (orthonormal rows), cepstral lifter, and c0 replaced by log-energy when
``use-energy``. With ``snip-edges=false`` frames are centred on
``t * shift + shift/2`` and samples outside the signal are mirrored as Kaldi does.

All frames of a batch of utterances go through one chain of tensor ops (one
``rfft``, two matrix products), in float32, which is what makes it faster than
per-frame C++ on CPU and lets the same code run on a GPU.

Samples are on the int16 scale (as ``pyxv.io.read_audio`` returns them).
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from ..config import ConfigError
from .kaldi_conf import parse_kaldi_conf

FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclass
class MfccOptions:
    """Kaldi's MFCC options (names with underscores; Kaldi's defaults)."""
    sample_frequency: float = 16000.0
    frame_length: float = 25.0       # ms
    frame_shift: float = 10.0        # ms
    num_mel_bins: int = 23
    num_ceps: int = 13
    low_freq: float = 20.0
    high_freq: float = 0.0           # <= 0: offset from Nyquist
    dither: float = 1.0
    preemphasis_coefficient: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"       # povey hamming hanning rectangular sine blackman
    blackman_coeff: float = 0.42
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    use_energy: bool = True
    raw_energy: bool = True
    energy_floor: float = 0.0
    cepstral_lifter: float = 22.0
    min_duration: float = 0.0        # utterances shorter than this (s) are skipped, as in Kaldi

    # --- derived sizes
    @property
    def window_size(self) -> int:
        return int(self.sample_frequency * 0.001 * self.frame_length)

    @property
    def window_shift(self) -> int:
        return int(self.sample_frequency * 0.001 * self.frame_shift)

    @property
    def padded_window_size(self) -> int:
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def check(self) -> None:
        if self.window_size < 2 or self.window_shift < 1:
            raise ValueError(f"frame length {self.frame_length} ms / shift {self.frame_shift} ms "
                             f"are too small at {self.sample_frequency} Hz")
        if self.num_ceps > self.num_mel_bins:
            raise ValueError(f"--num-ceps={self.num_ceps} exceeds --num-mel-bins={self.num_mel_bins}")
        if self.window_type not in _WINDOWS:
            raise ValueError(f"unknown --window-type={self.window_type} ({' '.join(_WINDOWS)})")
        nyq = 0.5 * self.sample_frequency
        high = self.high_freq if self.high_freq > 0 else nyq + self.high_freq
        if not (0.0 <= self.low_freq < high <= nyq):
            raise ValueError(f"bad mel range: --low-freq={self.low_freq} --high-freq={self.high_freq} "
                             f"at Nyquist {nyq} Hz")

    @classmethod
    def from_conf(cls, path: str | os.PathLike) -> "MfccOptions":
        """Read a Kaldi ``mfcc.conf``. Options Kaldi's ``compute-mfcc-feats`` has but
        that cannot change our output are accepted; those we do not implement are
        accepted only at their default value; anything else is rejected naming file:line."""
        spec = {f.name.replace("_", "-"): _TYPES[f.type if isinstance(f.type, str) else f.type.__name__]
                for f in fields(cls)}
        for name, (typ, _default) in _UNSUPPORTED.items():
            spec[name] = typ
        vals = parse_kaldi_conf(path, spec, ignore=_HARMLESS)
        for name, (_typ, default) in _UNSUPPORTED.items():
            key = name.replace("-", "_")
            if key in vals:
                if vals.pop(key) != default:
                    raise ConfigError(f"{path}: --{name} is a Kaldi option pyxv does not implement "
                                         f"(only its default {default} is accepted)")
        opts = cls(**vals)
        try:
            opts.check()
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from e
        return opts


_TYPES = {"float": float, "int": int, "bool": bool, "str": str}
# Kaldi options that do not change the features we write (we always resample to
# --sample-frequency, pick channels by pyxv.io's rule, and write float arks).
_HARMLESS = ("allow-downsample", "allow-upsample", "channel", "output-format", "verbose",
             "config", "write-utt2dur", "utt2spk", "max-feature-vectors", "print-args")
_UNSUPPORTED = {"htk-compat": (bool, False), "vtln-warp": (float, 1.0), "vtln-low": (float, 100.0),
                "vtln-high": (float, -500.0), "subtract-mean": (bool, False),
                "debug-mel": (bool, False), "vtln-map": (str, "")}


def _window(kind: str, n: int, blackman_coeff: float) -> np.ndarray:
    i = np.arange(n, dtype=np.float64)
    a = 2 * math.pi / (n - 1)
    if kind == "hanning":
        w = 0.5 - 0.5 * np.cos(a * i)
    elif kind == "sine":
        w = np.sin(0.5 * a * i)
    elif kind == "hamming":
        w = 0.54 - 0.46 * np.cos(a * i)
    elif kind == "povey":
        w = (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    elif kind == "rectangular":
        w = np.ones(n)
    elif kind == "blackman":
        w = blackman_coeff - 0.5 * np.cos(a * i) + (0.5 - blackman_coeff) * np.cos(2 * a * i)
    else:
        raise ValueError(kind)
    return w


_WINDOWS = ("povey", "hamming", "hanning", "rectangular", "sine", "blackman")


def mel_scale(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_banks(opts: MfccOptions) -> np.ndarray:
    """Kaldi's triangular mel filters -> (padded/2 + 1, num_mel_bins); the Nyquist row is 0."""
    n_pad = opts.padded_window_size
    n_fft_bins = n_pad // 2
    nyq = 0.5 * opts.sample_frequency
    high = opts.high_freq if opts.high_freq > 0 else nyq + opts.high_freq
    bin_width = opts.sample_frequency / n_pad
    mel_low, mel_high = mel_scale(opts.low_freq), mel_scale(high)
    delta = (mel_high - mel_low) / (opts.num_mel_bins + 1)
    b = np.arange(opts.num_mel_bins)[None, :]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = mel_scale(bin_width * np.arange(n_fft_bins))[:, None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    w = np.where(mel <= center, up, down)
    w = np.where((mel > left) & (mel < right), w, 0.0)
    return np.vstack([w, np.zeros((1, opts.num_mel_bins))])


def dct_lifter_matrix(opts: MfccOptions) -> np.ndarray:
    """Kaldi's DCT (first num_ceps rows of the orthonormal DCT-II) times the lifter,
    transposed -> (num_mel_bins, num_ceps)."""
    n = opts.num_mel_bins
    k = np.arange(opts.num_ceps)[:, None]
    j = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(math.pi / n * (j + 0.5) * k)
    d[0, :] = math.sqrt(1.0 / n)
    if opts.cepstral_lifter != 0.0:
        q = opts.cepstral_lifter
        lift = 1.0 + 0.5 * q * np.sin(math.pi * np.arange(opts.num_ceps) / q)
        d = d * lift[:, None]
    return d.T


def num_frames(num_samples: int, opts: MfccOptions) -> int:
    """Kaldi's ``NumFrames``."""
    L, S = opts.window_size, opts.window_shift
    if opts.snip_edges:
        return 0 if num_samples < L else 1 + (num_samples - L) // S
    return (num_samples + S // 2) // S


def utt_seed(seed: int, utt: str) -> int:
    """A per-utterance dither seed: the same features whatever the job split."""
    return (int(seed) * 1000003 + zlib.crc32(utt.encode("utf-8"))) & 0x7FFFFFFF


class Mfcc:
    """MFCC extractor for one set of options.

    >>> mfcc = Mfcc.from_conf("conf/mfcc_8k.conf")
    >>> feats = mfcc(samples, sample_rate=8000)          # (T, num_ceps) float32
    >>> feats_list = mfcc.compute_batch([x1, x2], seeds=[1, 2])
    """

    def __init__(self, opts: MfccOptions | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.opts = opts or MfccOptions()
        self.opts.check()
        self.device = torch.device(device)
        self.dtype = dtype
        o = self.opts
        self.window = torch.tensor(_window(o.window_type, o.window_size, o.blackman_coeff),
                                   dtype=dtype, device=self.device)
        self.mel = torch.tensor(mel_banks(o), dtype=dtype, device=self.device)
        self.mel2 = self.mel.repeat_interleave(2, dim=0)   # rows for (re, im) pairs
        self.dct = torch.tensor(dct_lifter_matrix(o), dtype=dtype, device=self.device)
        self.log_energy_floor = math.log(o.energy_floor) if o.energy_floor > 0 else None

    @classmethod
    def from_conf(cls, path: str | os.PathLike, device: str = "cpu") -> "Mfcc":
        return cls(MfccOptions.from_conf(path), device=device)

    @property
    def sample_rate(self) -> int:
        return int(self.opts.sample_frequency)

    @property
    def dim(self) -> int:
        return self.opts.num_ceps

    # ------------------------------------------------------------- framing
    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) samples -> (F, window_size) frames (a view when possible)."""
        o = self.opts
        L, S = o.window_size, o.window_shift
        n = x.shape[0]
        F = num_frames(n, o)
        if F == 0:
            return x.new_zeros((0, L))
        if o.snip_edges:
            return x.as_strided((F, L), (S, 1))
        first = S // 2 - L // 2                       # first sample of frame 0
        last = (F - 1) * S + first + L                # one past the last sample used
        left = max(0, -first)
        right = max(0, last - n)
        if left or right:
            idx = np.concatenate([np.arange(-left, 0), np.arange(n, n + right)])
            idx = np.mod(idx, 2 * n)                  # Kaldi mirrors: -1 -> 0, n -> n-1, ...
            idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
            ext = x[torch.from_numpy(idx).to(x.device)]
            x = torch.cat([ext[:left], x, ext[left:]])
        start = first + left
        return x[start:].as_strided((F, L), (S, 1))

    # ------------------------------------------------------------ compute
    def _compute_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(F, L) raw frames (already dithered) -> (F, num_ceps).

        Works in place in one zero-padded (F, padded) buffer, and takes the power
        spectrum's mel energies as one product of the interleaved (re, im) squares
        with a row-doubled filter matrix: no strided reductions, no extra copies."""
        o = self.opts
        F, L = frames.shape
        if F == 0:
            return frames.new_zeros((0, o.num_ceps))
        buf = frames.new_zeros((F, o.padded_window_size))
        v = buf[:, :L]
        v.copy_(frames)
        if o.remove_dc_offset:
            v -= v.mean(dim=1, keepdim=True)
        energy = None
        if o.use_energy and o.raw_energy:
            energy = torch.linalg.vecdot(v, v).clamp_min_(FLT_EPSILON).log_()
        c = o.preemphasis_coefficient
        if c != 0.0:
            prev = v[:, :-1] * c
            v[:, 1:] -= prev
            v[:, 0] *= 1.0 - c
        v *= self.window
        if o.use_energy and not o.raw_energy:
            energy = torch.linalg.vecdot(v, v).clamp_min_(FLT_EPSILON).log_()
        spec = torch.view_as_real(torch.fft.rfft(buf)).reshape(F, -1)
        logmel = (spec.square_() @ self.mel2).clamp_min_(FLT_EPSILON).log_()
        ceps = logmel @ self.dct
        if energy is not None:
            if self.log_energy_floor is not None:
                energy = energy.clamp_min(self.log_energy_floor)
            ceps[:, 0] = energy
        return ceps

    def compute_batch(self, waves: Sequence[np.ndarray | torch.Tensor],
                      seeds: Sequence[int] | None = None,
                      dither: float | None = None) -> list[np.ndarray]:
        """MFCC of several utterances at once -> list of (T_i, num_ceps) float32.

        ``waves``: 1-D int16-scale samples at ``sample_rate``. ``seeds``: one dither
        seed per utterance (default: 0 for all); ``dither`` overrides the option.
        """
        dither = self.opts.dither if dither is None else dither
        parts, counts = [], []
        for i, w in enumerate(waves):
            x = torch.as_tensor(np.asarray(w, dtype=np.float32) if not torch.is_tensor(w) else w,
                                device=self.device).to(self.dtype)
            if x.ndim != 1:
                raise ValueError(f"waveform {i} must be 1-D, got shape {tuple(x.shape)}")
            fr = self._frames(x)
            if dither != 0.0 and fr.shape[0]:
                g = torch.Generator(device=self.device)
                g.manual_seed(int(seeds[i]) if seeds is not None else 0)
                fr = fr + dither * torch.randn(fr.shape, generator=g, device=self.device, dtype=self.dtype)
            parts.append(fr)
            counts.append(fr.shape[0])
        if not parts:
            return []
        with torch.no_grad():
            allf = torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()
            out = self._compute_frames(allf).float().cpu().numpy()
        res, k = [], 0
        for c in counts:
            res.append(out[k:k + c])
            k += c
        return res

    def __call__(self, samples: np.ndarray | torch.Tensor, sample_rate: int | None = None,
                 seed: int = 0, dither: float | None = None) -> np.ndarray:
        """MFCC of one utterance (N,) int16-scale samples -> (T, num_ceps) float32."""
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(f"audio at {sample_rate} Hz but MFCC options want {self.sample_rate} Hz "
                             "(read it with pyxv.io.read_audio(..., sample_rate=...))")
        return self.compute_batch([samples], seeds=[seed], dither=dither)[0]


def compute_mfcc_file(conf_path: str | os.PathLike, wav_spec: str, *, seed: int = 0,
                      dither: float | None = None) -> np.ndarray:
    """MFCC of one ``wav.scp`` value (path or ``cmd |``) with a Kaldi conf; audio
    at another rate is resampled to the conf's ``--sample-frequency``."""
    from ..io import read_audio

    mfcc = Mfcc.from_conf(conf_path)
    x, _ = read_audio(wav_spec, sample_rate=mfcc.sample_rate)
    return mfcc(x, seed=seed, dither=dither)
