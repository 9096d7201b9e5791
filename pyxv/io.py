"""Small I/O pieces every stage shares: Kaldi text tables, atomic writes, audio.

Kaldi text tables are ``key value...`` lines. ``wav.scp`` values are a file path
or a shell command ending in ``|`` whose stdout is audio (Kaldi's pipe rule).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

# numpy and soundfile are imported where audio is read: the data-dir tools in
# utils/ use the text-table helpers only and start faster without them.


class AudioError(RuntimeError):
    """Audio that cannot be read or used; the message names the file and why."""


class OutputError(RuntimeError):
    """An output that cannot be written (disk full, I/O error, permission, a
    vanished folder). Unlike bad input it is fatal: the job stops at once."""

    def __init__(self, path: str | os.PathLike, err: BaseException):
        self.path = Path(path)
        self.errno = getattr(err, "errno", None)
        why = getattr(err, "strerror", None) or str(err)
        super().__init__(f"cannot write {self.path}: {why} ({free_space(self.path)})")


# Errors that can only come from writing: never a property of the input.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in 1 MiB blocks: model files can be large)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_format_json(path: str | os.PathLike, fmt: str, version: int, what: str, error: type) -> dict:
    """The JSON object of a pyxv file that names its ``"format"`` and ``"version"``
    (a parameter file, a speaker file); anything else is one ``error`` naming the
    file and saying what is wrong (``what``: the kind of file, for the message)."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{path}: no such {what} file")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not a {what} file (not JSON: {e})") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise error(f"{path}: not a {what} file (no \"format\": \"{fmt}\")")
    if d.get("version") != version:
        raise error(f"{path}: {what} file version {d.get('version')}; this pyxv reads {version}")
    return d


def free_space(path: str | os.PathLike) -> str:
    """'N MB free on <folder>' for the nearest existing folder of ``path``."""
    import shutil

    p = Path(path).absolute()
    while not p.is_dir() and p != p.parent:
        p = p.parent
    try:
        return f"{shutil.disk_usage(p).free / 1e6:.1f} MB free on {p}"
    except OSError as e:
        return f"free space on {p} unknown: {e.strerror}"


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in folder ``path`` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
def atomic_open(path: str | os.PathLike, mode: str = "w", *, fsync: bool = True, **kw) -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only when
    the block finishes without error, so readers never see half a file
    (``fsync``: also after a power failure).
    An OSError while creating, writing, syncing or renaming it becomes an
    :class:`OutputError` naming ``path`` and the free space; the temporary file
    never survives (errors, SIGINT, and SIGTERM where it raises SystemExit)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        f = open(tmp, mode, **kw)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise OutputError(path, e) from e
    try:
        try:
            with f:
                yield f
        except OSError as e:
            # A full disk inside the block is this file's; other OSErrors may be
            # the caller's input and pass unchanged.
            if e.errno in OUTPUT_ERRNOS:
                raise OutputError(path, e) from e
            raise
        try:
            if fsync:
                with open(tmp, "rb+") as g:
                    os.fsync(g.fileno())
            # mkstemp makes the file 0600; give it the mode a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except OSError as e:
            raise OutputError(path, e) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


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
