"""What every corpus preparer shares: utterance records, audio checks, writing
Kaldi data dirs with their protocol subsets, and speaker-independent folds.

A preparer turns a corpus into a list of :class:`Utt` records, then
:func:`check_audio` reads every file's header (in parallel) to get ``utt2dur``
and to report, count and skip absent or unreadable audio, and
:class:`Corpus` writes ``all/`` and the subsets.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import soundfile as sf

from ..datadir import write_datadir
from ..io import write_lines


class PrepError(RuntimeError):
    """A corpus that cannot be prepared at all (missing root, missing label
    file, a label line that does not parse): the message names the file."""


def log(tool: str, msg: str) -> None:
    print(f"{tool}: {msg}", file=sys.stderr, flush=True)


@dataclass
class Utt:
    """One utterance of a corpus.

    ``path`` is the audio file; ``start``/``end`` (seconds) make it a segment
    of that file (then ``rec`` names the recording in ``segments``).
    ``emotion`` is the lower-case class name or None (pre-training corpora);
    ``gender`` is ``m``/``f`` or None (unknown).
    """
    utt: str
    spk: str
    path: str
    emotion: str | None = None
    gender: str | None = None
    start: float | None = None
    end: float | None = None
    rec: str | None = None
    split: str | None = None
    unknown_spk: bool = False
    dur: float | None = field(default=None, repr=False)


def sanitize_id(s: str) -> str:
    """Kaldi ids may not hold whitespace; we also keep them to a safe set."""
    out = "".join(c if (c.isalnum() or c in "_-.") else "_" for c in s.strip())
    if not out:
        raise ValueError(f"empty id from {s!r}")
    return out


def require_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise PrepError(f"{what} {p} does not exist or is not a directory")
    return p


def require_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise PrepError(f"{what} {p} does not exist")
    return p


def _header(path: str) -> tuple[float | None, str | None]:
    try:
        if not os.path.exists(path):
            return None, "file does not exist"
        if os.path.getsize(path) == 0:
            return None, "file is empty"
        if os.path.getsize(path) < 1024:
            with open(path, "rb") as f:
                if f.read(24).startswith(b"version https://git-lfs"):
                    return None, "is a git-lfs pointer, not audio (fetch the audio: git lfs pull)"
        info = sf.info(path)
        if info.frames <= 0:
            return None, "audio has no samples"
        return info.frames / info.samplerate, None
    except Exception as e:  # libsndfile: corrupt, truncated, unknown format
        return None, f"cannot read audio header: {str(e).strip().splitlines()[0] if str(e).strip() else e}"


def check_audio(utts: Sequence[Utt], *, tool: str, nj: int = 2,
                max_report: int = 20) -> list[Utt]:
    """Read every audio header (``nj`` threads); fill ``dur``; drop and report
    absent/unreadable files and segments that lie outside their file.

    Returns the kept utterances. Each problem is logged naming the file; the
    total is logged as ``skipped N of M``.
    """
    paths = sorted({u.path for u in utts})
    heads = {}
    step = 20000   # bounded number of pending futures; a progress line per chunk
    with ThreadPoolExecutor(max_workers=max(1, nj)) as ex:
        for i in range(0, len(paths), step):
            chunk = paths[i:i + step]
            heads.update(zip(chunk, ex.map(_header, chunk)))
            if len(paths) > step:
                log(tool, f"read {min(i + step, len(paths))}/{len(paths)} audio headers")
    kept, bad = [], []
    for u in utts:
        dur, err = heads[u.path]
        if err is None and u.start is not None:
            end = u.end if u.end is not None else dur
            if u.start < 0 or end <= u.start or u.start >= dur or end > dur + 0.01:
                err = f"segment {u.start}-{u.end} s lies outside the audio ({dur:.2f} s)"
            else:
                dur = min(end, dur) - u.start
        if err is not None:
            bad.append((u, err))
            continue
        u.dur = dur
        kept.append(u)
    for u, err in bad[:max_report]:
        log(tool, f"WARNING: skipping utterance {u.utt}: {u.path}: {err}")
    if len(bad) > max_report:
        log(tool, f"WARNING: ... and {len(bad) - max_report} more unusable audio files")
    if bad:
        log(tool, f"WARNING: skipped {len(bad)} of {len(utts)} utterances whose audio is absent or unreadable")
    return kept


class Corpus:
    """A prepared corpus: utterances (checked) that can be written as data dirs."""

    def __init__(self, utts: Iterable[Utt], *, tool: str):
        self.tool = tool
        self.utts: dict[str, Utt] = {}
        for u in utts:
            if u.utt in self.utts:
                raise PrepError(f"duplicate utterance id {u.utt} ({self.utts[u.utt].path} and {u.path})")
            if not u.utt.startswith(u.spk):
                raise PrepError(f"utterance id {u.utt} does not start with its speaker id {u.spk}")
            self.utts[u.utt] = u
        # A speaker must have one gender.
        self.spk2gender: dict[str, str] = {}
        for u in self.utts.values():
            if u.gender is None:
                continue
            g = self.spk2gender.setdefault(u.spk, u.gender)
            if g != u.gender:
                raise PrepError(f"speaker {u.spk} has two genders ({g} and {u.gender}), e.g. utterance {u.utt}")

    def __len__(self) -> int:
        return len(self.utts)

    @property
    def speakers(self) -> list[str]:
        return sorted({u.spk for u in self.utts.values()})

    def write(self, path: str | os.PathLike, utt_ids: Iterable[str] | None = None) -> Path:
        """Write a data dir with all utterances or the given subset."""
        ids = list(self.utts) if utt_ids is None else list(utt_ids)
        sel = [self.utts[i] for i in ids]
        if not sel:
            raise PrepError(f"{path}: no utterances to write")
        utt2spk = {u.utt: u.spk for u in sel}
        segs = any(u.start is not None for u in sel)
        if segs:
            wav_scp = {}
            for u in sel:
                rec = u.rec or u.utt
                if wav_scp.setdefault(rec, u.path) != u.path:
                    raise PrepError(f"recording id {rec} names two files ({wav_scp[rec]} and {u.path})")
            segments = {u.utt: f"{u.rec or u.utt} {u.start or 0.0:.3f} "
                               f"{(u.end if u.end is not None else (u.start or 0.0) + u.dur):.3f}" for u in sel}
        else:
            wav_scp = {u.utt: u.path for u in sel}
            segments = None
        spks = set(utt2spk.values())
        spk2gender = {s: g for s, g in self.spk2gender.items() if s in spks}
        # Pseudo-speakers (unknown_<utt>) may lack a gender; real ones may not.
        missing = sorted(s for s in spks - set(spk2gender) if not s.startswith("unknown_"))
        if spk2gender and missing:
            raise PrepError(f"{path}: speakers without gender: {' '.join(missing[:5])}")
        utt2emo = {u.utt: u.emotion for u in sel if u.emotion is not None}
        if utt2emo and len(utt2emo) != len(sel):
            raise PrepError(f"{path}: some utterances have an emotion label and some do not")
        unk = sorted((u.utt for u in sel if u.unknown_spk), key=lambda k: k.encode())
        return _write_if_changed(Path(path), self.tool, dict(
            utt2spk=utt2spk, wav_scp=wav_scp, segments=segments, spk2gender=spk2gender or None,
            utt2emo=utt2emo or None, utt2dur={u.utt: f"{u.dur:.3f}" for u in sel}), unk)

    def summary(self, utt_ids: Iterable[str] | None = None) -> str:
        ids = list(self.utts) if utt_ids is None else list(utt_ids)
        sel = [self.utts[i] for i in ids]
        spks = {u.spk for u in sel if not u.unknown_spk}
        unk = sum(u.unknown_spk for u in sel)
        g = {"m": 0, "f": 0}
        for s in spks:
            if s in self.spk2gender:
                g[self.spk2gender[s]] += 1
        emos: dict[str, int] = {}
        for u in sel:
            if u.emotion is not None:
                emos[u.emotion] = emos.get(u.emotion, 0) + 1
        hours = sum(u.dur or 0.0 for u in sel) / 3600
        s = f"{len(sel)} utterances, {len(spks)} speakers ({g['m']} m, {g['f']} f)"
        if unk:
            s += f" + {unk} utterances of unknown speaker"
        if emos:
            s += ", " + " ".join(f"{k}={v}" for k, v in sorted(emos.items()))
        return s + f", {hours:.2f} h"

    def write_protocol(self, data_dir: str | os.PathLike,
                       subsets: dict[str, Iterable[str]]) -> None:
        """Write ``all/`` and each named subset (``"fold1/train"``, ``"test"``...)
        under ``data_dir``; logs a count line for each."""
        import shutil

        data_dir = Path(data_dir)
        subsets = {k: list(v) for k, v in subsets.items()}
        # Subsets of an earlier protocol (other folds, a split) would be read
        # by the emotion code as if they were this one's.
        keep = {n.split("/")[0] for n, ids in subsets.items() if ids}
        for old in list(data_dir.glob("fold*")) + [data_dir / n for n in ("train", "dev", "test")]:
            if old.is_dir() and old.name not in keep:
                shutil.rmtree(old)
        for name in subsets:
            top, _, sub = name.partition("/")
            for old in (data_dir / top).glob("*") if sub else []:
                if old.is_dir() and not subsets.get(f"{top}/{old.name}"):
                    shutil.rmtree(old)
        self.write(data_dir / "all")
        log(self.tool, f"{data_dir}/all: {self.summary()}")
        for name, ids in subsets.items():
            ids = list(ids)
            if not ids:
                log(self.tool, f"WARNING: {data_dir}/{name}: no utterances; not written")
                continue
            self.write(data_dir / name, ids)
            log(self.tool, f"{data_dir}/{name}: {self.summary(ids)}")


MANAGED = ("wav.scp", "utt2spk", "spk2utt", "segments", "spk2gender", "utt2emo", "utt2dur",
           "unknown_spk_utts")


def _write_if_changed(path: Path, tool: str, tables: dict, unknown: list[str]) -> Path:
    """Write a data dir; files whose content is unchanged keep their mtime (so
    later stages see nothing new). When the utterances or their audio changed,
    features computed from the old ones (feats.scp, vad.scp, gemaps*.scp,
    utt2num_frames, split*/) are removed: they would no longer match."""
    import filecmp
    import shutil
    import tempfile

    path.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.new", dir=path.parent))
    try:
        write_datadir(stage, **tables)
        if unknown:
            # Pseudo-speakers (unknown speaker): listed so that SV trials skip them.
            write_lines(stage / "unknown_spk_utts", unknown)
        changed = []
        for name in MANAGED:
            new, old = stage / name, path / name
            if new.exists():
                if not (old.is_file() and filecmp.cmp(new, old, shallow=False)):
                    os.replace(new, old)
                    changed.append(name)
            elif old.exists():   # an optional file of an earlier run would lie
                old.unlink()
                changed.append(name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if {"wav.scp", "utt2spk", "segments"} & set(changed):
        stale = [p for p in path.iterdir()
                 if (p.is_file() and (p.name.endswith(".scp") and p.name != "wav.scp"
                                      or p.name in ("utt2num_frames", "utt2orig")))
                 or (p.is_dir() and p.name.startswith("split"))]
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if stale:
            log(tool, f"{path}: utterances changed; removed stale {' '.join(sorted(p.name for p in stale))}")
    return path


def speaker_folds(spk2gender: dict[str, str | None], k: int, seed: int = 0) -> list[list[str]]:
    """Split speakers into ``k`` folds, balanced by gender, deterministically.

    Speakers are sorted, shuffled with ``seed`` within each gender, then dealt
    round-robin (females continue where males stopped) so fold sizes differ by
    at most one and each fold gets a similar gender mix.
    """
    import random

    spks = sorted(spk2gender)
    if k < 2 or k > len(spks):
        raise PrepError(f"cannot make {k} speaker folds from {len(spks)} speakers")
    rng = random.Random(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    i = 0
    for g in ("m", "f", None):
        group = [s for s in spks if spk2gender[s] == g]
        rng.shuffle(group)
        for s in group:
            folds[i % k].append(s)
            i += 1
    return [sorted(f) for f in folds]


def carve_dev(spk2gender: dict[str, str | None], n_dev: int, seed: int = 0) -> list[str]:
    """Pick ``n_dev`` speakers for a dev set, alternating genders, seeded."""
    import random

    rng = random.Random(seed)
    by_g: dict = {}
    for s in sorted(spk2gender):
        by_g.setdefault(spk2gender[s], []).append(s)
    for g in by_g:
        rng.shuffle(by_g[g])
    order = sorted(by_g, key=lambda g: (g is None, g or ""))
    out: list[str] = []
    while len(out) < n_dev and any(by_g.values()):
        for g in order:
            if by_g[g] and len(out) < n_dev:
                out.append(by_g[g].pop())
    return sorted(out)


def utts_of(corpus: Corpus, spks: Iterable[str]) -> list[str]:
    spks = set(spks)
    return [u.utt for u in corpus.utts.values() if u.spk in spks]


def run_tool(tool: str, fn, *args, **kw) -> int:
    """Run a preparer for a command-line entry point: a :class:`PrepError`
    becomes one clear ``tool: ERROR: ...`` line and exit status 1."""
    try:
        fn(*args, **kw)
    except PrepError as e:
        log(tool, f"ERROR: {e}")
        return 1
    return 0


def copy_datadir(src, dst, *, nj: int = 2, tool: str = "copy_datadir") -> Path:
    """Copy a prepared data dir's text files (not features) to ``dst``, adding
    ``utt2dur`` when it is missing (read from the audio headers)."""
    import shutil

    from ..datadir import DataDir
    from ..io import audio_duration, write_table

    src, dst = Path(src), Path(dst)
    if not (src / "utt2spk").is_file() or not (src / "wav.scp").is_file():
        raise PrepError(f"{src} is not a data dir (needs wav.scp and utt2spk)")
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("wav.scp", "utt2spk", "spk2utt", "spk2gender", "utt2emo", "utt2dur", "segments",
                 "unknown_spk_utts"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
        elif (dst / name).exists():
            (dst / name).unlink()
    d = DataDir(dst)
    if not d.has("spk2utt"):
        from ..datadir import utt2spk_to_spk2utt
        write_table(dst / "spk2utt", utt2spk_to_spk2utt(d.utt2spk))
    if not d.has("utt2dur"):
        log(tool, f"{dst}: computing utt2dur from the audio")
        utts = d.utts
        if d.segments is not None:
            segs = d.segments
            durs = {u: segs[u].end - segs[u].start for u in utts}
        else:
            with ThreadPoolExecutor(max_workers=max(1, nj)) as ex:
                durs = dict(zip(utts, ex.map(lambda u: audio_duration(d.wav_scp[u]), utts)))
        write_table(dst / "utt2dur", {u: f"{v:.3f}" for u, v in durs.items()})
    return dst


def test_speakers_in(emo_dir) -> set[str]:
    """Speakers of every test subset of an emotion corpus dir."""
    from ..io import read_table

    spks: set[str] = set()
    for t in Path(emo_dir).glob("**/test/utt2spk"):
        spks |= set(read_table(t).values())
    return spks
