"""Small I/O pieces every stage shares: Kaldi text tables, atomic writes, audio.

Kaldi text tables are ``key value...`` lines. ``wav.scp`` values are a file path
or a shell command ending in ``|`` whose stdout is audio (Kaldi's pipe rule).
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

# numpy and soundfile are imported where audio is read: the data-dir tools in
# utils/ use the text-table helpers only and start faster without them.


class AudioError(RuntimeError):
    """Audio that cannot be read or used; the message names the file and why."""


# ---------------------------------------------------------------- text tables
def read_table(path: str | os.PathLike, *, split: bool = False) -> dict:
    """Read a Kaldi text table into an ordered dict.

    With ``split=False`` the value is the rest of the line (one string, as for
    ``wav.scp`` whose value may hold spaces); with ``split=True`` it is a list of
    whitespace-separated fields (as for ``spk2utt``). Duplicate keys are an error.
    """
    out: dict = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split(None, 1)
            key = parts[0]
            rest = parts[1].strip() if len(parts) > 1 else ""
            if key in out:
                raise ValueError(f"{path}:{lineno}: duplicate key '{key}'")
            out[key] = rest.split() if split else rest
    return out


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kw) -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only when
    the block finishes without error, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kw) as f:
            yield f
        # mkstemp makes the file 0600; give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_table(path: str | os.PathLike, table: Mapping[str, object]) -> None:
    """Write a Kaldi text table sorted by key in C-locale order, atomically.
    List values are joined by spaces."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for key in sorted(table, key=lambda k: k.encode("utf-8")):
            value = table[key]
            if isinstance(value, (list, tuple)):
                value = " ".join(map(str, value))
            f.write(f"{key} {value}\n")


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line.rstrip("\n") + "\n")


# ---------------------------------------------------------------------- audio
def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    from math import gcd

    import numpy as np

    from scipy.signal import resample_poly

    if sr == target:
        return x
    g = gcd(sr, target)
    return resample_poly(x, target // g, sr // g).astype(np.float32)


def read_audio(spec: str, *, sample_rate: int | None = None,
               start: float | None = None, end: float | None = None,
               channel: int | None = None, name: str | None = None) -> tuple[np.ndarray, int]:
    """Read audio named by a ``wav.scp`` value: a path, or a command ending in ``|``.

    Returns float32 samples on the int16 scale (as Kaldi reads them) and the
    sample rate. ``start``/``end`` (seconds) cut a segment. Multi-channel audio:
    ``channel`` picks one, otherwise the channels are averaged (our documented
    rule). With ``sample_rate`` set, other rates are resampled (polyphase) to it.
    ``name`` (the utterance id) goes into error messages.
    """
    import numpy as np
    import soundfile as sf

    who = f"utterance {name} ({spec})" if name else spec
    spec = spec.strip()
    try:
        if spec.endswith("|"):
            cmd = spec[:-1].strip()
            proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise AudioError(f"{who}: command failed with exit status {proc.returncode}: {err[0]}")
            if not proc.stdout:
                raise AudioError(f"{who}: command produced no audio")
            data, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
        else:
            if not os.path.exists(spec):
                raise AudioError(f"{who}: file does not exist")
            if os.path.getsize(spec) == 0:
                raise AudioError(f"{who}: file is empty")
            data, sr = sf.read(spec, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # soundfile/libsndfile errors on corrupt or truncated files
        raise AudioError(f"{who}: cannot read audio: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{who}: audio has no samples")
    if channel is not None:
        if channel >= data.shape[1]:
            raise AudioError(f"{who}: asked for channel {channel} of {data.shape[1]}")
        x = data[:, channel]
    else:
        x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if start is not None or end is not None:
        s = int(round((start or 0.0) * sr))
        e = int(round(end * sr)) if end is not None else len(x)
        if s >= len(x) or e <= s:
            raise AudioError(f"{who}: segment {start}-{end} s lies outside the audio ({len(x) / sr:.2f} s)")
        x = x[s:e]
    x = np.ascontiguousarray(x, dtype=np.float32) * 32768.0
    if sample_rate is not None and sample_rate != sr:
        x = _resample(x, sr, sample_rate)
        sr = sample_rate
    return x, sr


def audio_duration(spec: str) -> float:
    """Duration in seconds of a path (from the header) or a pipe (by reading it)."""
    import soundfile as sf

    spec = spec.strip()
    if not spec.endswith("|"):
        try:
            return sf.info(spec).duration
        except Exception as e:
            raise AudioError(f"{spec}: cannot read audio header: {e}") from e
    x, sr = read_audio(spec)
    return len(x) / sr
