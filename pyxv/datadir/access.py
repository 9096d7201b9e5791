"""Read access to a data dir (:class:`DataDir`) and writing a new one from tables
(:func:`write_datadir`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..io import read_table, write_table
from .tables import c_sorted


def utt2spk_to_spk2utt(utt2spk: dict[str, str]) -> dict[str, list[str]]:
    spk2utt: dict[str, list[str]] = {}
    for utt in c_sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return spk2utt


@dataclass
class Segment:
    recording: str
    start: float
    end: float


class DataDir:
    """Read access to a Kaldi data dir; files are read when first asked for.

    >>> d = DataDir("data/demo/all")
    >>> d.utt2spk["spk1-utt1"], d.utts[:2], d.has("utt2emo")
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"data dir {self.path} does not exist")
        self._cache: dict[str, dict] = {}

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def table(self, name: str, *, split: bool = False) -> dict:
        key = f"{name}:{split}"
        if key not in self._cache:
            p = self.path / name
            if not p.is_file():
                raise FileNotFoundError(f"{self.path}: has no {name}")
            self._cache[key] = read_table(p, split=split)
        return self._cache[key]

    @property
    def utt2spk(self) -> dict[str, str]:
        return self.table("utt2spk")

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        if self.has("spk2utt"):
            return self.table("spk2utt", split=True)
        return utt2spk_to_spk2utt(self.utt2spk)

    @property
    def utts(self) -> list[str]:
        return list(self.utt2spk)

    @property
    def wav_scp(self) -> dict[str, str]:
        return self.table("wav.scp")

    @property
    def utt2emo(self) -> dict[str, str]:
        return self.table("utt2emo")

    @property
    def spk2gender(self) -> dict[str, str]:
        return self.table("spk2gender")

    @property
    def segments(self) -> dict[str, Segment] | None:
        if not self.has("segments"):
            return None
        out = {}
        for utt, rest in self.table("segments", split=True).items():
            if len(rest) < 3:
                raise ValueError(f"{self.path}/segments: line for {utt} needs 'utt recording start end'")
            out[utt] = Segment(rest[0], float(rest[1]), float(rest[2]))
        return out

    def audio_spec(self, utt: str) -> tuple[str, float | None, float | None]:
        """(wav.scp value, start, end) of an utterance, following segments."""
        segs = self.segments
        if segs is not None:
            s = segs[utt]
            return self.wav_scp[s.recording], s.start, s.end
        return self.wav_scp[utt], None, None

    def read_audio(self, utt: str, sample_rate: int | None = None):
        from ..io import read_audio

        spec, start, end = self.audio_spec(utt)
        return read_audio(spec, sample_rate=sample_rate, start=start, end=end, name=utt)


def write_datadir(path: str | os.PathLike, *, utt2spk: dict[str, str], wav_scp: dict[str, str],
                  **tables: dict) -> Path:
    """Write a data dir from tables; ``spk2utt`` is derived from ``utt2spk``.

    Extra tables are keyword arguments named after their files with dots as
    underscores (``utt2emo=...``, ``spk2gender=...``, ``segments=...``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_table(path / "wav.scp", wav_scp)
    write_table(path / "utt2spk", utt2spk)
    write_table(path / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    for name, table in tables.items():
        if table is None:
            continue
        fname = name.replace("_scp", ".scp")
        write_table(path / fname, table)
    return path
