"""The GE2E speaker encoder's front-end (Wan et al. 2018, as Resemblyzer 0.1.4 ships it).

    waveform at any rate
    -> 16 kHz, mono, float in [-1, 1]              resample (polyphase)
    -> volume raised to -30 dBFS (never lowered)   normalize_volume
    -> long silences cut                           trim_long_silences (energy VAD, see below)
    -> power mel spectrogram (T, 40)               mel_spectrogram: 25 ms Hann window, 10 ms hop,
                                                   centred frames (zero padding), |STFT|^2,
                                                   40 Slaney-normalised mel filters, 0-8 kHz; not log

The mel filters and framing reproduce ``librosa.feature.melspectrogram(y, sr=16000,
n_fft=400, hop_length=160, n_mels=40)`` (librosa >= 0.10 pads with zeros); a test
checks it against librosa.

Silence: Resemblyzer marks 30 ms windows with webrtcvad (mode 3), smooths the
flags with a moving average of 8 windows, rounds, dilates by 7 windows and keeps
the marked samples. We keep the smoothing, rounding and dilation but mark a
window as speech by its energy: within ``silence_db`` dB of the loudest window
and above an absolute floor. No webrtcvad, so no C extension to build.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

INT16_MAX = 2 ** 15 - 1


@dataclass(frozen=True)
class Ge2eMelOptions:
    sample_rate: int = 16000
    n_mels: int = 40
    window_ms: int = 25
    hop_ms: int = 10
    target_dbfs: float = -30.0       # volume normalisation (increase only)
    trim_silence: bool = True
    vad_window_ms: int = 30
    vad_average_width: int = 8       # windows in the moving average of speech flags
    vad_max_silence: int = 6         # dilation: silences up to this many windows are kept
    silence_db: float = 40.0         # a window quieter than the loudest by more is silence
    silence_floor_dbfs: float = -70.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "Ge2eMelOptions":
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GE2E front-end option(s) {unknown} (known: {sorted(known)})")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_fft(self) -> int:
        return self.sample_rate * self.window_ms // 1000

    @property
    def hop(self) -> int:
        return self.sample_rate * self.hop_ms // 1000


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
                   ) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters on Slaney's mel scale, each
    scaled to unit area (``2 / bandwidth``), as librosa's default."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    w = np.maximum(0.0, np.minimum(lower, upper))
    w *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return w.astype(np.float32)


def normalize_volume(wav: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Scale ``wav`` (floats in [-1, 1]) up to ``target_dbfs`` RMS; louder audio is left alone."""
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2)))
    if rms <= 0:
        return wav
    change = target_dbfs - 20 * math.log10(rms / INT16_MAX)
    return wav if change < 0 else (wav * 10 ** (change / 20)).astype(np.float32)


def _moving_average(a: np.ndarray, width: int) -> np.ndarray:
    padded = np.concatenate((np.zeros((width - 1) // 2), a, np.zeros(width // 2)))
    c = np.cumsum(padded, dtype=float)
    c[width:] = c[width:] - c[:-width]
    return c[width - 1:] / width


def speech_mask(wav: np.ndarray, opts: Ge2eMelOptions) -> np.ndarray:
    """Boolean mask over ``vad_window_ms`` windows (the whole windows of ``wav``)."""
    n = opts.sample_rate * opts.vad_window_ms // 1000
    w = wav[:len(wav) - len(wav) % n].reshape(-1, n).astype(np.float64)
    if len(w) == 0:
        return np.zeros(0, dtype=bool)
    db = 10 * np.log10(np.mean(w ** 2, axis=1) + 1e-12)  # dBFS of each window (full scale = 1)
    flags = (db > db.max() - opts.silence_db) & (db > opts.silence_floor_dbfs)
    mask = np.round(_moving_average(flags.astype(float), opts.vad_average_width)).astype(bool)
    k = opts.vad_max_silence
    if k > 0 and mask.any():
        from scipy.ndimage import binary_dilation

        mask = binary_dilation(mask, np.ones(k + 1))
    return mask


def trim_long_silences(wav: np.ndarray, opts: Ge2eMelOptions) -> np.ndarray:
    """``wav`` without its long silences (length a multiple of the VAD window). If
    nothing is marked as speech the (window-trimmed) waveform is kept whole."""
    n = opts.sample_rate * opts.vad_window_ms // 1000
    mask = speech_mask(wav, opts)
    wav = wav[:len(mask) * n]
    if not mask.any():
        return wav
    return wav[np.repeat(mask, n)]


def preprocess_waveform(x: np.ndarray, sample_rate: int, opts: Ge2eMelOptions) -> np.ndarray:
    """Audio as :func:`pyxv.io.read_audio` returns it (int16 scale, any rate) ->
    the encoder's waveform: 16 kHz floats in [-1, 1], volume-normalised, long
    silences cut."""
    from ..io import _resample

    x = np.asarray(x, dtype=np.float32)
    if sample_rate != opts.sample_rate:
        x = _resample(x, sample_rate, opts.sample_rate)
    wav = x / 32768.0
    wav = normalize_volume(wav, opts.target_dbfs)
    if opts.trim_silence:
        wav = trim_long_silences(wav, opts)
    return np.ascontiguousarray(wav, dtype=np.float32)


class MelSpectrogram:
    """Power mel spectrogram of 16 kHz floats: ``(T, n_mels)`` float32 with
    ``T = 1 + len(wav) // hop`` (centred frames)."""

    def __init__(self, opts: Ge2eMelOptions | None = None):
        self.opts = opts or Ge2eMelOptions()
        o = self.opts
        self.window = torch.hann_window(o.n_fft, periodic=True, dtype=torch.float32)
        self.fbank = torch.from_numpy(mel_filterbank(o.sample_rate, o.n_fft, o.n_mels))

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        if len(x) == 0:
            return np.zeros((0, self.opts.n_mels), dtype=np.float32)
        return self.power_mel(x).contiguous().numpy()

    def power_mel(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) float32 tensor -> (T, n_mels): the torch part (exported models call it too)."""
        o = self.opts
        spec = torch.stft(x, o.n_fft, hop_length=o.hop, win_length=o.n_fft, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2           # (n_fft/2+1, T)
        return (self.fbank @ power).T


# Torch twins of normalize_volume and trim_long_silences (tested equal to them), in
# ops that trace with a dynamic number of samples: exported models run them in the graph.
def normalize_volume_torch(wav: torch.Tensor, target_dbfs: float) -> torch.Tensor:
    """:func:`normalize_volume` of a float32 tensor."""
    rms = ((wav.double() * INT16_MAX) ** 2).mean().sqrt()
    change = target_dbfs - 20 * torch.log10(rms / INT16_MAX)
    gain = torch.where((rms <= 0) | (change < 0), torch.ones_like(change), 10 ** (change / 20))
    return wav * gain.float()


def _window_sums(a: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """``out[i] = sum(a[i - before : i + after + 1])`` over a zero-padded ``a`` (float64)."""
    a = torch.cat([a.new_zeros(before), a, a.new_zeros(after)])
    c = torch.cat([a.new_zeros(1), torch.cumsum(a, 0)])
    w = before + after + 1
    return c[w:] - c[:-w]


def speech_mask_torch(wav: torch.Tensor, opts: Ge2eMelOptions) -> torch.Tensor:
    """:func:`speech_mask` of a float32 tensor with at least one whole window."""
    n = opts.sample_rate * opts.vad_window_ms // 1000
    idx = torch.arange(wav.shape[0] // n)[:, None] * n + torch.arange(n)[None, :]   # whole windows (a gather
    w = wav[idx].double()                                                              # traces where a slice cannot)
    db = 10 * torch.log10((w ** 2).mean(dim=1) + 1e-12)
    flags = ((db > db.max() - opts.silence_db) & (db > opts.silence_floor_dbfs)).double()
    width = opts.vad_average_width
    mask = torch.round(_window_sums(flags, (width - 1) // 2, width // 2) / width) > 0
    k = opts.vad_max_silence
    if k > 0:   # scipy's binary_dilation with ones(k + 1): k // 2 windows back, the rest forward
        mask = _window_sums(mask.double(), k // 2, k - k // 2) > 0
    return mask


def trim_long_silences_torch(wav: torch.Tensor, opts: Ge2eMelOptions) -> torch.Tensor:
    """:func:`trim_long_silences` of a float32 tensor (all of it kept when no window is speech)."""
    n = opts.sample_rate * opts.vad_window_ms // 1000
    mask = speech_mask_torch(wav, opts)
    keep = mask[:, None].expand(-1, n).reshape(-1)
    keep = keep | ~mask.any()
    return wav[torch.arange(keep.shape[0])][keep]
