"""Data augmentation as in Kaldi's x-vector recipes (egs/voxceleb/v2): reverberated
copies, and additive noise, music and babble from MUSAN at Kaldi's SNRs.

Kaldi's semantics (steps/data/augment_data_dir.py, reverberate_data_dir.py and
wav-reverberate), which we follow:

- **reverb**: convolve with a room impulse response drawn from the chosen room
  types (small and medium rooms, equal probability); the output is shifted by
  the RIR's peak so that it stays aligned and keeps the input's length, and is
  rescaled to the input's power.
- **noise** (foreground): MUSAN noises placed one after another from t=0,
  ``interval`` seconds apart, until the utterance is covered; each at its own
  SNR drawn from ``snrs`` (15/10/5/0 dB).
- **music** (background): ``num`` music files, each looped or cut to the
  utterance length, at SNRs drawn from ``snrs`` (15/10/8/5 dB).
- **babble** (background): 3-7 MUSAN speech files summed (distinct files when
  there are enough), each looped or cut to the utterance length and at its own
  SNR drawn from 20/17/15/13 dB.

SNR of a component = 10 log10(power of the clean utterance / power of the
component over the samples it covers); a noise cut at the end of the utterance
is scaled on its part that is used (Kaldi scales on the whole noise file; the
difference is only for the last noise and is what makes each component's SNR
exact). If the mixture would clip the 16-bit range, the whole mixture is scaled
down (SNRs unchanged); the gain is recorded.

Every random choice for an utterance comes from a generator seeded by
``(seed, utterance id)``: the output does not depend on how the data are split
into jobs.
"""
from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ConfigError

TYPES = ("reverb", "noise", "music", "babble")

DEFAULTS = {
    "seed": 777,
    "copies_per_utt": 1,
    "types": list(TYPES),
    "reverb": {"rooms": ["smallroom", "mediumroom"], "room_probs": [0.5, 0.5]},
    "noise": {"snrs": [15, 10, 5, 0], "interval": 1.0},
    "music": {"snrs": [15, 10, 8, 5], "num": [1]},
    "babble": {"snrs": [20, 17, 15, 13], "num": [3, 4, 5, 6, 7]},
}
SOURCE_DIRS = {"reverb": "rirs", "noise": "musan_noise", "music": "musan_music", "babble": "musan_speech"}
INT16_MAX = 32767.0


def load_config(path) -> dict:
    """Read conf/augment.yaml over the defaults; unknown keys and bad values are errors."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            user = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(user, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for k, v in user.items():
        if k not in DEFAULTS:
            raise ConfigError(f"{path}: unknown key '{k}' (known: {', '.join(DEFAULTS)})")
        if isinstance(DEFAULTS[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"{path}: '{k}' must be a mapping")
            for kk in v:
                if kk not in DEFAULTS[k]:
                    raise ConfigError(f"{path}: unknown key '{k}.{kk}' (known: {', '.join(DEFAULTS[k])})")
            cfg[k].update(v)
        else:
            cfg[k] = v
    types = cfg["types"]
    if not types or any(t not in TYPES for t in types) or len(set(types)) != len(types):
        raise ConfigError(f"{path}: 'types' must be distinct names from {', '.join(TYPES)}")
    n = cfg["copies_per_utt"]
    if not isinstance(n, int) or not 1 <= n <= len(types):
        raise ConfigError(f"{path}: 'copies_per_utt' must be an integer in 1..{len(types)}")
    for t in ("noise", "music", "babble"):
        if not cfg[t]["snrs"] or not all(isinstance(s, (int, float)) for s in cfg[t]["snrs"]):
            raise ConfigError(f"{path}: '{t}.snrs' must be a list of numbers (dB)")
    for t in ("music", "babble"):
        if not cfg[t]["num"] or not all(isinstance(s, int) and s > 0 for s in cfg[t]["num"]):
            raise ConfigError(f"{path}: '{t}.num' must be a list of positive integers")
    r = cfg["reverb"]
    if len(r["rooms"]) != len(r["room_probs"]) or any(p < 0 for p in r["room_probs"]) or sum(r["room_probs"]) <= 0:
        raise ConfigError(f"{path}: 'reverb.rooms' and 'reverb.room_probs' must have the same length, "
                                 "probabilities >= 0")
    if float(cfg["noise"]["interval"]) < 0:
        raise ConfigError(f"{path}: 'noise.interval' must be >= 0")
    return cfg


def utt_rng(seed: int, utt: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(utt.encode("utf-8"))])


def choose_types(cfg: dict, utt: str) -> list[str]:
    """Which augmentation types an utterance gets (``copies_per_utt`` of ``types``)."""
    rng = utt_rng(cfg["seed"], utt + "/types")
    types = list(cfg["types"])
    pick = set(rng.choice(len(types), size=cfg["copies_per_utt"], replace=False).tolist())
    return [t for i, t in enumerate(types) if i in pick]


def power(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.dot(x, x) / len(x)) if len(x) else 0.0


def loop_to(x: np.ndarray, n: int) -> np.ndarray:
    """Repeat or cut ``x`` to ``n`` samples (Kaldi's ``wav-reverberate --duration``)."""
    if len(x) >= n:
        return x[:n]
    return np.tile(x, -(-n // len(x)))[:n]


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve ``x`` (N,) with ``rir`` (M,), shift by the RIR's peak, keep N samples,
    rescale to the input's power -> (N,) float32."""
    from scipy.signal import fftconvolve

    rir = np.asarray(rir, dtype=np.float64)
    if len(rir) == 0 or not np.any(rir):
        raise ValueError("impulse response is empty or all zeros")
    x64 = np.asarray(x, dtype=np.float64)
    y = fftconvolve(x64, rir / np.sqrt(np.dot(rir, rir)))
    shift = int(np.argmax(np.abs(rir)))
    y = y[shift:shift + len(x)]
    p_in, p_out = power(x64), power(y)
    if p_out > 0:
        y = y * np.sqrt(p_in / p_out)
    return y.astype(np.float32)


@dataclass
class Component:
    """One added noise: where it starts, its scaled samples, its SNR, its source id."""
    source: str
    start: int
    samples: np.ndarray
    snr: float


def scale_to_snr(noise: np.ndarray, signal_power: float, snr_db: float) -> np.ndarray:
    p = power(noise)
    if p <= 0:
        raise ValueError("noise is silent")
    return (noise * np.sqrt(signal_power * 10.0 ** (-snr_db / 10.0) / p)).astype(np.float32)


def mix(x: np.ndarray, components: list[Component]) -> tuple[np.ndarray, float]:
    """Add components to ``x``; scale down if it would clip int16 -> (y, gain)."""
    y = np.asarray(x, dtype=np.float64).copy()
    for c in components:
        y[c.start:c.start + len(c.samples)] += c.samples
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    gain = INT16_MAX / peak if peak > INT16_MAX else 1.0
    return (y * gain).astype(np.float32), gain


@dataclass
class Sources:
    """The noise/music/speech/RIR data dirs, audio read on demand (LRU cache),
    resampled to the utterance's rate."""
    noise_dir: Path
    cache_size: int = 64
    _ids: dict = field(default_factory=dict)
    _scp: dict = field(default_factory=dict)
    _cache: OrderedDict = field(default_factory=OrderedDict)

    def ids(self, kind: str) -> list[str]:
        if kind not in self._ids:
            from .io import read_table

            d = Path(self.noise_dir) / SOURCE_DIRS[kind]
            if not (d / "wav.scp").is_file():
                raise FileNotFoundError(f"{d}/wav.scp does not exist (needed for '{kind}' augmentation)")
            self._scp[kind] = read_table(d / "wav.scp")
            self._ids[kind] = sorted(self._scp[kind], key=lambda k: k.encode())
            if not self._ids[kind]:
                raise ValueError(f"{d}/wav.scp is empty")
        return self._ids[kind]

    def audio(self, kind: str, key: str, sr: int) -> np.ndarray:
        from .io import read_audio

        ck = (kind, key, sr)
        if ck in self._cache:
            self._cache.move_to_end(ck)
            return self._cache[ck]
        self.ids(kind)
        x, _ = read_audio(self._scp[kind][key], sample_rate=sr, name=f"{SOURCE_DIRS[kind]}/{key}")
        self._cache[ck] = x
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return x

    def rir_ids(self, rooms: list[str], probs: list[float]) -> tuple[list[list[str]], np.ndarray]:
        """RIR ids per room type (ids containing the room name), and the
        probabilities of the room types that have any."""
        ids = self.ids("reverb")
        groups, ps = [], []
        for room, p in zip(rooms, probs):
            g = [i for i in ids if room in i]
            if g and p > 0:
                groups.append(g)
                ps.append(p)
        if not groups:  # RIR ids without room names: use them all
            groups, ps = [ids], [1.0]
        ps = np.asarray(ps, dtype=np.float64)
        return groups, ps / ps.sum()


def augment_one(x: np.ndarray, sr: int, aug_type: str, cfg: dict, sources: Sources,
                rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One augmented copy of ``x`` (N,) int16-scale -> (y (N,), info dict).

    ``info``: ``type``, ``gain``, and ``components`` = list of
    ``{"source", "start" (s), "snr"}`` (``{"rir"}`` for reverb)."""
    n = len(x)
    if n == 0:
        raise ValueError("empty audio")
    info: dict = {"type": aug_type, "gain": 1.0}
    if aug_type == "reverb":
        groups, ps = sources.rir_ids(cfg["reverb"]["rooms"], cfg["reverb"]["room_probs"])
        g = groups[int(rng.choice(len(groups), p=ps))]
        rid = g[int(rng.integers(len(g)))]
        y = reverberate(x, sources.audio("reverb", rid, sr))
        y, info["gain"] = mix(y, [])
        info["rir"] = rid
        return y, info
    p_sig = power(x)
    comps: list[Component] = []
    if aug_type == "noise":
        ids = sources.ids("noise")
        snrs = cfg["noise"]["snrs"]
        gap = int(round(float(cfg["noise"]["interval"]) * sr))
        start = 0
        while start < n:
            key = ids[int(rng.integers(len(ids)))]
            snr = float(snrs[int(rng.integers(len(snrs)))])
            z = sources.audio("noise", key, sr)[: n - start]
            comps.append(Component(key, start, scale_to_snr(z, p_sig, snr), snr))
            start += len(z) + gap
    else:  # music, babble: background, looped to the utterance's length
        ids = sources.ids(aug_type)
        snrs = cfg[aug_type]["snrs"]
        k = int(cfg[aug_type]["num"][int(rng.integers(len(cfg[aug_type]["num"])))])
        # distinct files when there are enough (Kaldi draws with replacement, which
        # can sum a file with itself: one louder talker rather than two)
        keys = (rng.choice(len(ids), size=k, replace=False) if k <= len(ids)
                else rng.integers(len(ids), size=k))
        for j in keys:
            key = ids[int(j)]
            snr = float(snrs[int(rng.integers(len(snrs)))])
            z = loop_to(sources.audio(aug_type, key, sr), n)
            comps.append(Component(key, 0, scale_to_snr(z, p_sig, snr), snr))
    y, info["gain"] = mix(x, comps)
    info["components"] = [{"source": c.source, "start": round(c.start / sr, 4), "snr": c.snr,
                           "length": round(len(c.samples) / sr, 4)} for c in comps]
    return y, info


def write_flac(path: Path, y: np.ndarray, sr: int) -> None:
    """Write int16 FLAC atomically (encoded in memory, then a temporary name and
    a rename; not fsync'ed: one per copy would cost more than the copy). A write
    error raises :class:`pyxv.io.OutputError` (libsndfile's own errors on a full
    disk say only "System error")."""
    import io

    import soundfile as sf

    from .io import atomic_open

    q = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, q, int(sr), format="FLAC", subtype="PCM_16")
    with atomic_open(path, "wb", fsync=False) as f:
        f.write(buf.getbuffer())
