"""Kaldi data directories: the contract between the recipe's steps.

A data dir holds ``wav.scp``, ``utt2spk``, ``spk2utt`` and optionally
``segments``, ``spk2gender``, ``utt2emo``, ``utt2dur``, ``utt2num_frames``,
``feats.scp``, ``vad.scp`` (and other ``*.scp`` archives such as
``gemaps_lld.scp``). Files are sorted in C-locale order with unique keys.

Besides read access (:class:`DataDir`, :func:`write_datadir`) this module holds
the logic of the data-dir tools in ``utils/``: :func:`validate_datadir`,
:func:`fix_datadir`, :func:`split_datadir`, :func:`select_utts` with
:func:`filter_datadir` (subsets), :func:`combine_datadirs`, :func:`copy_datadir`
and :func:`propagate_features`. Outputs are written atomically and only when
their content changes, so re-running a tool keeps time stamps (and the
up-to-date checks of later steps) intact.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .io import read_table, write_table


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
        from .io import read_audio

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


# =====================================================================
# Data-dir tools: validate, fix, split, subset, combine, copy, propagate.
# The shell front-ends in utils/ call these through pyxv.bin.datadir_*.
# =====================================================================
import bisect as _bisect
import random as _random
from itertools import accumulate as _accumulate
from itertools import groupby as _groupby
import re as _re
import shutil as _shutil
import struct as _struct
import time as _time

from .io import atomic_open

# Recording-keyed files (when a segments file exists, wav.scp is one of them).
RECO_FILES = ("reco2dur", "reco2file_and_channel", "reco2num_samples")
# Speaker-keyed files besides spk2utt (regenerated, never copied).
SPK_KEYED = ("spk2gender", "cmvn.scp")
# One utterance id per line, a subset of utt2spk.
UTT_LISTS = ("unknown_spk_utts",)
# Small files copied unchanged into derived dirs.
VERBATIM = ("frame_shift",)


def ckey(s: str) -> bytes:
    """Sort key of C-locale order (byte order of UTF-8)."""
    return s.encode("utf-8", "surrogateescape")


def c_sorted(keys) -> list[str]:
    """``sorted(keys, key=ckey)``; ASCII keys (the usual case) are compared as
    they are, which orders them the same and is several times faster."""
    keys = list(keys)
    if all(k.isascii() for k in keys):
        keys.sort()
    else:
        keys.sort(key=ckey)
    return keys


def c_less(a: str, b: str) -> bool:
    """``ckey(a) < ckey(b)`` without encoding ASCII strings."""
    if a.isascii() and b.isascii():
        return a < b
    return ckey(a) < ckey(b)


def iter_lines(path: str | os.PathLike):
    """Lines of a Kaldi table as ``(lineno, key, value)``, one at a time; blank
    lines skipped, duplicates and disorder kept (for the validator to report)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split(None, 1)
            yield lineno, parts[0], (parts[1].strip() if len(parts) > 1 else "")


def read_lines(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """All of :func:`iter_lines` as a list."""
    return list(iter_lines(path))


def classify(path: str | os.PathLike) -> dict[str, str]:
    """Map each table file of a data dir to its key kind: ``utt`` (keys are
    utterances), ``spk``, ``reco`` (recordings, with segments) or ``uttlist``.
    ``spk2utt`` and unknown files are left out."""
    path = Path(path)
    has_segments = (path / "segments").is_file()
    kinds = {}
    for p in sorted(path.iterdir(), key=lambda p: ckey(p.name)):
        n = p.name
        if not p.is_file() or n.startswith("."):
            continue
        if n == "wav.scp":
            kinds[n] = "reco" if has_segments else "utt"
        elif n in RECO_FILES:
            kinds[n] = "reco"
        elif n in SPK_KEYED or (n.startswith("spk2") and n != "spk2utt"):
            kinds[n] = "spk"
        elif n in UTT_LISTS:
            kinds[n] = "uttlist"
        elif n in ("utt2spk", "segments", "text") or n.startswith("utt2") or n.endswith(".scp"):
            kinds[n] = "utt"
    return kinds


def _write_if_changed(path: Path, lines) -> bool:
    """Write lines (any iterable) atomically unless the file already holds
    exactly them (so an unchanged output keeps its time stamp and downstream
    steps stay up to date). Written in pieces to a temporary file beside it and
    compared there, so a big table is never held twice in memory."""
    import filecmp
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            block: list[str] = []
            for ln in lines:
                block.append(ln)
                if len(block) >= 8192:
                    f.write("\n".join(block) + "\n")
                    block.clear()
            if block:
                f.write("\n".join(block) + "\n")
        if path.is_file() and filecmp.cmp(tmp, path, shallow=False):
            os.unlink(tmp)
            return False
        # mkstemp makes the file 0600; give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def _table_lines(table: dict[str, str]) -> list[str]:
    return [f"{k} {table[k]}" if table[k] != "" else k for k in c_sorted(table)]


def read_first(path: str | os.PathLike) -> tuple[dict[str, str], int]:
    """``(key -> value keeping the first of duplicated keys, number of lines)``
    of a table: what ``_first_dups(iter_lines(path))`` gives, without the
    per-line tuples (the tools' hot path on big dirs)."""
    out: dict[str, str] = {}
    n = 0
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split(None, 1)
            if not parts:
                continue
            n += 1
            if parts[0] not in out:
                out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out, n


def read_keys(path: str | os.PathLike) -> tuple[set[str], int]:
    """``(set of keys, number of lines)`` of a table."""
    keys = set()
    n = 0
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split(None, 1)
            if parts:
                n += 1
                keys.add(parts[0])
    return keys, n


def _first_dups(entries) -> dict[str, str]:
    """Key -> value keeping the first of duplicated keys."""
    out: dict[str, str] = {}
    for _, k, v in entries:
        out.setdefault(k, v)
    return out


# ------------------------------------------------------- archive frame counts
_HEADER_CACHE_LIMIT = 64


def _parse_binary_header(buf: bytes) -> int | None:
    """Rows of a Kaldi binary matrix (or length of a vector) from the bytes at
    its offset; None when the object is of a kind we do not parse."""
    if not buf.startswith(b"\0B"):
        return None
    tok_end = buf.find(b" ", 2)
    if tok_end < 0:
        return None
    tok = buf[2:tok_end]
    p = tok_end + 1
    if tok in (b"FM", b"DM"):
        if buf[p] != 4:
            return None
        return _struct.unpack_from("<i", buf, p + 1)[0]
    if tok in (b"FV", b"DV"):
        if buf[p] != 4:
            return None
        return _struct.unpack_from("<i", buf, p + 1)[0]
    if tok in (b"CM", b"CM2", b"CM3"):
        # GlobalHeader without its format field: float min, float range, int rows, int cols.
        return _struct.unpack_from("<i", buf, p + 8)[0]
    return None


def scp_num_rows(scp: str | os.PathLike, utts=None) -> tuple[dict[str, int], dict[str, str]]:
    """Rows (frames) of every matrix/vector an scp points to, reading only the
    headers. Returns ``(rows, errors)``; ``errors`` maps an utterance to why it
    could not be read. ``utts`` limits the work to those keys."""
    rows: dict[str, int] = {}
    errors: dict[str, str] = {}
    handles: dict[str, object] = {}
    try:
        for _, utt, spec in iter_lines(scp):
            if utts is not None and utt not in utts:
                continue
            m = _re.fullmatch(r"(.+):(\d+)", spec)
            n = None
            if m and not spec.endswith("|"):
                fn, off = m.group(1), int(m.group(2))
                try:
                    f = handles.get(fn)
                    if f is None:
                        if len(handles) >= _HEADER_CACHE_LIMIT:
                            for h in handles.values():
                                h.close()
                            handles.clear()
                        f = handles[fn] = open(fn, "rb")
                    f.seek(off)
                    n = _parse_binary_header(f.read(32))
                except OSError as e:
                    errors[utt] = f"cannot read {fn}: {e.strerror}"
                    continue
            if n is None:  # text archives, pipes, unusual types: let kaldiio read it
                try:
                    import kaldiio

                    a = kaldiio.load_mat(spec)
                    n = int(a.shape[0]) if getattr(a, "ndim", 0) >= 1 else 1
                except Exception as e:  # noqa: BLE001 - any read failure is reported
                    errors[utt] = f"cannot read '{spec}': {e}"
                    continue
            rows[utt] = n
    finally:
        for h in handles.values():
            h.close()
    return rows, errors


# ------------------------------------------------------------------ validate
def _names(keys, limit: int = 5) -> str:
    keys = sorted(keys, key=ckey)
    s = ", ".join(keys[:limit])
    return s + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def validate_datadir(path: str | os.PathLike, *, no_feats: bool = False, no_wav: bool = False,
                     no_text: bool = False, max_per_kind: int = 10) -> list[str]:
    """Every problem of a data dir, one sentence each (empty list: valid).

    Checks: C-locale order and unique keys in every table; utt2spk and spk2utt
    agree; speaker order follows utterance order (ids start with the speaker);
    every per-utterance file covers exactly the utterances of utt2spk; wav.scp
    paths exist (pipes are trusted), segments point into wav.scp with start <
    end; feats.scp/vad.scp/utt2num_frames agree on frame counts; spk2gender is
    m/f for every speaker; utt2emo labels are single lower-case words;
    utt2dur positive.
    """
    d = Path(path)
    problems: list[str] = []
    if not d.is_dir():
        return [f"{d} is not a directory"]
    if not (d / "utt2spk").is_file():
        return [f"{d} has no utt2spk"]
    kinds = classify(d)
    skip = set()
    if no_feats:
        skip |= {"feats.scp", "vad.scp", "utt2num_frames", "cmvn.scp"}
    if no_text:
        skip.add("text")
    if no_wav:
        skip |= {"wav.scp", "segments", *RECO_FILES}
    tables: dict[str, dict[str, str]] = {}

    def check_lines(name: str, entries) -> dict[str, str]:
        first: dict[str, str] = {}
        dups, disorder, empty = [], [], []
        prev = None
        for lineno, key, value in entries:
            if key in first:
                dups.append(f"'{key}' (line {lineno})")
            else:
                first[key] = value
            if prev is not None and c_less(key, prev):
                disorder.append(f"line {lineno} '{key}' after '{prev}'")
            prev = key
            if value == "" and kinds.get(name) != "uttlist":
                empty.append(f"'{key}' (line {lineno})")
        for what, items in (("duplicate keys", dups), ("is not sorted in C-locale order", disorder),
                            ("lines without a value", empty)):
            if items:
                shown = "; ".join(items[:max_per_kind])
                more = f"; ... ({len(items) - max_per_kind} more)" if len(items) > max_per_kind else ""
                if what.startswith("is "):
                    problems.append(f"{name} {what} (use utils/fix_data_dir.sh): {shown}{more}")
                else:
                    problems.append(f"{name}: {len(items)} {what}: {shown}{more}")
        return first

    for name in ["utt2spk", "spk2utt", *[n for n in kinds if n != "utt2spk"]]:
        if name in skip or not (d / name).is_file():
            continue
        tables[name] = check_lines(name, iter_lines(d / name))

    utt2spk = tables["utt2spk"]
    utts = set(utt2spk)
    if not utts:
        problems.append("utt2spk is empty: no utterances")
    bad_spk = [u for u, s in utt2spk.items() if len(s.split()) != 1]
    if bad_spk:
        problems.append(f"utt2spk: {len(bad_spk)} lines whose speaker is not one word: {_names(bad_spk)}")
    speakers = {s for s in utt2spk.values()}
    # Kaldi sorts utterances and speakers together: ids must start with the speaker.
    order = c_sorted(utt2spk)
    prev_spk = None
    crossing = []
    for u in order:
        s = utt2spk[u]
        if prev_spk is not None and s != prev_spk and c_less(s, prev_spk):
            crossing.append(u)
        prev_spk = s
    if crossing:
        problems.append(f"utt2spk: speaker order does not follow utterance order at {len(crossing)} "
                        f"utterances ({_names(crossing)}); utterance ids must start with their speaker id")

    # spk2utt must be exactly what utt2spk says.
    if "spk2utt" not in tables:
        problems.append("spk2utt is missing (make it with utils/utt2spk_to_spk2utt.py utt2spk > spk2utt)")
    else:
        spk2utt = {s: v.split() for s, v in tables["spk2utt"].items()}
        expect = utt2spk_to_spk2utt(utt2spk)
        only_s = set(spk2utt) - set(expect)
        only_u = set(expect) - set(spk2utt)
        if only_s:
            problems.append(f"spk2utt has {len(only_s)} speakers not in utt2spk: {_names(only_s)}")
        if only_u:
            problems.append(f"spk2utt lacks {len(only_u)} speakers of utt2spk: {_names(only_u)}")
        differ = [s for s in set(spk2utt) & set(expect) if spk2utt[s] != expect[s]]
        if differ:
            problems.append(f"spk2utt and utt2spk disagree on the utterances of {len(differ)} speakers "
                            f"(or spk2utt lists them out of order): {_names(differ)}")

    # Coverage: every per-utterance file holds exactly the utterances of utt2spk.
    for name, kind in kinds.items():
        if name in skip or name == "utt2spk" or name not in tables:
            continue
        keys = set(tables[name])
        if kind in ("utt", "uttlist"):
            extra = keys - utts
            if extra:
                problems.append(f"{name} has {len(extra)} utterances not in utt2spk: {_names(extra)}")
            if kind == "utt":
                missing = utts - keys
                if missing:
                    problems.append(f"{name} lacks {len(missing)} utterances of utt2spk: {_names(missing)}")
        elif kind == "spk":
            extra = keys - speakers
            if extra:
                problems.append(f"{name} has {len(extra)} speakers not in utt2spk: {_names(extra)}")
            if name == "spk2gender":
                missing = {s for s in speakers - keys if not s.startswith("unknown_")}
                if missing:
                    problems.append(f"spk2gender lacks {len(missing)} speakers: {_names(missing)}")
                bad = [s for s, g in tables[name].items() if g not in ("m", "f")]
                if bad:
                    problems.append(f"spk2gender: {len(bad)} speakers with a gender other than m/f: "
                                    + _names(f"{s}={tables[name][s]!r}" for s in bad))

    # wav.scp, segments and recordings.
    if not no_wav:
        if "wav.scp" not in tables:
            problems.append("wav.scp is missing")
        else:
            wav = tables["wav.scp"]
            if "segments" in tables:
                bad_seg, recs = [], set()
                for u, v in tables["segments"].items():
                    f = v.split()
                    try:
                        ok = len(f) == 3 and 0 <= float(f[1]) < float(f[2])  # Kaldi: 4 fields, end > start
                    except ValueError:
                        ok = False
                    if not ok:
                        bad_seg.append(u)
                    if f:
                        recs.add(f[0])
                if bad_seg:
                    problems.append(f"segments: {len(bad_seg)} lines are not 'utt recording start end' "
                                    f"with 0 <= start < end: {_names(bad_seg)}")
                no_rec = recs - set(wav)
                if no_rec:
                    problems.append(f"segments names {len(no_rec)} recordings missing from wav.scp: {_names(no_rec)}")
                unused = set(wav) - recs
                if unused:
                    problems.append(f"wav.scp has {len(unused)} recordings no segment uses: {_names(unused)}")
            absent, tilde = [], []
            for k, v in wav.items():
                v = v.strip()
                if v.startswith("~"):
                    tilde.append(k)  # fopen() does no tilde expansion
                if v.endswith("|"):
                    continue
                if not os.path.exists(v):
                    m = _re.fullmatch(r"(.+):\d+", v)  # Kaldi's ark:offset form
                    if not (m and os.path.exists(m.group(1))):
                        absent.append(f"{k} -> {v}")
            if absent:
                problems.append(f"wav.scp: {len(absent)} audio files do not exist: {_names(absent, 3)}")
            if tilde:
                problems.append(f"wav.scp: {len(tilde)} paths start with '~' (write the full path): {_names(tilde)}")

    # Values.
    if "utt2emo" in tables:
        bad = [u for u, e in tables["utt2emo"].items() if not _re.fullmatch(r"[a-z0-9_]+", e)]
        if bad:
            problems.append(f"utt2emo: {len(bad)} labels are not one lower-case word: "
                            + _names(f"{u}={tables['utt2emo'][u]!r}" for u in bad))
    for name, conv in (("utt2dur", float), ("utt2num_frames", int)):
        if name in tables:
            bad = []
            for u, v in tables[name].items():
                try:
                    ok = conv(v) > 0
                except ValueError:
                    ok = False
                if not ok:
                    bad.append(f"{u}={v!r}")
            if bad:
                problems.append(f"{name}: {len(bad)} values are not positive numbers: {_names(bad)}")

    # Frame counts: feats.scp, vad.scp and utt2num_frames agree.
    if not no_feats:
        counts: dict[str, dict[str, int]] = {}
        for name in ("feats.scp", "vad.scp"):
            if name in tables:
                rows, errs = scp_num_rows(d / name, utts)
                if errs:
                    problems.append(f"{name}: {len(errs)} entries cannot be read: "
                                    + _names(f"{u} ({e})" for u, e in errs.items()))
                counts[name] = rows
        if "utt2num_frames" in tables:
            counts["utt2num_frames"] = _int_values(tables["utt2num_frames"])
        names = list(counts)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                a, b = counts[names[i]], counts[names[j]]
                bad = [f"{u} ({a[u]} vs {b[u]})" for u in sorted(set(a) & set(b), key=ckey) if a[u] != b[u]]
                if bad:
                    problems.append(f"{names[i]} and {names[j]} disagree on the number of frames of "
                                    f"{len(bad)} utterances: {_names(bad)}")
    return problems


# ------------------------------------------------------------------ write helpers
def filter_datadir(src: str | os.PathLike, dest: str | os.PathLike, keep_utts, *,
                   remove_stale: bool = True) -> list[str]:
    """Write ``dest`` holding only the utterances ``keep_utts`` of ``src`` (every
    file filtered consistently: speakers, recordings, lists; spk2utt rebuilt).
    ``src`` may equal ``dest``. Returns the names of the files written."""
    return filter_datadir_parts(src, [(dest, keep_utts)], remove_stale=remove_stale)


def filter_datadir_parts(src: str | os.PathLike, parts, *, remove_stale: bool = True,
                         utt2spk: dict[str, str] | None = None) -> list[str]:
    """:func:`filter_datadir` into several destinations at once: ``parts`` is a
    list of ``(dest, keep_utts)`` with disjoint utterance sets. Every source
    file is read and sorted once and its lines dealt to the parts, so the cost
    is linear in the utterances whatever the number of parts (a split into N
    parts is one pass, as Kaldi's). Each part comes out byte for byte as
    ``filter_datadir(src, dest, keep_utts)`` would write it. ``utt2spk``: the
    source's utt2spk as :func:`read_first` gives it, when the caller has it."""
    src = Path(src)
    dests = [Path(dest) for dest, _ in parts]
    if utt2spk is None:
        utt2spk = read_first(src / "utt2spk")[0]
    # Only utterances with a speaker are kept anywhere.
    if len(parts) == 1:
        part_of = dict.fromkeys(utt2spk.keys() & set(parts[0][1]), 0)
    else:
        part_of = {}
        for i, (_, keep_utts) in enumerate(parts):
            for u in keep_utts:
                if part_of.setdefault(u, i) != i:
                    raise ValueError(f"utterance {u} is given to two parts of {src}")
        part_of = {u: i for u, i in part_of.items() if u in utt2spk}
    kinds = classify(src)
    # Utterances in C order with their part; speakers (and recordings) go to
    # every part that keeps one of their utterances.
    order = c_sorted(part_of)
    spk_parts: dict[str, set[int]] = {}
    for u in order:
        spk_parts.setdefault(utt2spk[u], set()).add(part_of[u])
    rec_parts: dict[str, set[int]] | None = None
    if (src / "segments").is_file():
        rec_parts = {}
        for u, v in read_first(src / "segments")[0].items():
            f = v.split()
            if f and u in part_of:
                rec_parts.setdefault(f[0], set()).add(part_of[u])
    every = set(range(len(parts)))
    for dest in dests:
        dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, kind in kinds.items():
        if kind not in ("utt", "spk", "reco", "uttlist"):
            continue
        table = read_first(src / name)[0]
        keys = c_sorted(table)
        if kind in ("utt", "uttlist"):
            # Grouped by part (a stable sort keeps C order inside each part) and
            # streamed to the part's file: no part's lines are ever held.
            keys = [k for k in keys if k in part_of]
            if len(parts) > 1:
                keys.sort(key=part_of.__getitem__)
            done = set()
            for i, group in _groupby(keys, key=part_of.__getitem__):
                lines_of = group if kind == "uttlist" else \
                    (f"{k} {v}" if (v := table[k]) != "" else k for k in group)
                _write_if_changed(dests[i] / name, lines_of)
                done.add(i)
            for i in every - done:
                _write_if_changed(dests[i] / name, [])
            lines = None
        else:
            lines = [[] for _ in parts]
            for k in keys:
                where = spk_parts.get(k, ()) if kind == "spk" else \
                    (every if rec_parts is None else rec_parts.get(k, ()))
                if where:
                    v = table[k]
                    line = f"{k} {v}" if v != "" else k
                    for i in where:
                        lines[i].append(line)
        if lines is not None:
            for dest, ls in zip(dests, lines):
                _write_if_changed(dest / name, ls)
        del lines, table, keys
        written.append(name)
    spk2utt: list[dict[str, list[str]]] = [{} for _ in parts]
    for u in order:
        spk2utt[part_of[u]].setdefault(utt2spk[u], []).append(u)
    for dest, s2u in zip(dests, spk2utt):
        _write_if_changed(dest / "spk2utt", [f"{s} {' '.join(s2u[s])}" for s in c_sorted(s2u)])
    written.append("spk2utt")
    for dest in dests:
        same = src.resolve() == dest.resolve()
        for name in VERBATIM:
            if (src / name).is_file() and not same:
                _write_if_changed(dest / name, (src / name).read_text().splitlines())
        if remove_stale and not same:
            for name, kind in classify(dest).items():
                if name not in written:
                    (dest / name).unlink()
    return written


# ----------------------------------------------------------------------- fix
def fix_datadir(path: str | os.PathLike, *, backup: bool = True) -> list[str]:
    """Make a data dir consistent: keep the utterances present in every
    per-utterance file (with a speaker, a recording when segments exist, valid
    values and agreeing frame counts), drop duplicate lines (the first is
    kept), re-sort, rebuild spk2utt, drop speakers without utterances.
    Originals of changed files go to ``.backup/``. Returns report lines."""
    d = Path(path)
    if not (d / "utt2spk").is_file():
        raise FileNotFoundError(f"{d}: has no utt2spk")
    report: list[str] = []
    kinds = classify(d)
    # Values are needed of these only; of the others (wav.scp, feats.scp, ...)
    # the keys are, which keeps memory down on big dirs.
    valued = ("utt2spk", "segments", "utt2emo", "utt2num_frames")
    tables: dict[str, dict[str, str] | set[str]] = {}
    for name in kinds:
        if name in valued:
            t, n_lines = read_first(d / name)
        else:
            t, n_lines = read_keys(d / name)
        if len(t) != n_lines:
            report.append(f"{name}: dropped {n_lines - len(t)} duplicate lines (kept the first of each key)")
        tables[name] = t
    utt2spk = {u: s for u, s in tables["utt2spk"].items() if len(s.split()) == 1}
    if len(utt2spk) != len(tables["utt2spk"]):
        report.append(f"utt2spk: dropped {len(tables['utt2spk']) - len(utt2spk)} lines without a one-word speaker")
    all_utts = set(tables["utt2spk"])
    keep = set(utt2spk)
    reasons: list[tuple[str, int]] = []

    def restrict(new: set[str], why: str) -> None:
        nonlocal keep
        lost = keep - new
        if lost:
            reasons.append((why, len(lost)))
            keep = keep & new

    for name, kind in kinds.items():
        if kind == "utt" and name != "utt2spk":
            keys = set(tables[name])
            restrict(keys, f"not in {name}")
            extra = keys - all_utts
            if extra:
                report.append(f"{name}: removed {len(extra)} entries of utterances not in utt2spk")
    if "segments" in tables and "wav.scp" in tables:
        ok = set()
        for u, v in tables["segments"].items():
            f = v.split()
            try:
                good = len(f) == 3 and f[0] in tables["wav.scp"] and 0 <= float(f[1]) < float(f[2])
            except ValueError:
                good = False
            if good:
                ok.add(u)
        restrict(ok, "a bad segments line or a recording missing from wav.scp")
    if "utt2emo" in tables:
        restrict({u for u, e in tables["utt2emo"].items() if e.strip()}, "an empty utt2emo label")
    # Frame counts must agree between feature archives and utt2num_frames.
    counts = []
    for name in ("feats.scp", "vad.scp"):
        if name in tables:
            rows, errs = scp_num_rows(d / name, keep)
            restrict(set(rows), f"an unreadable {name} entry")
            counts.append((name, rows))
    if "utt2num_frames" in tables:
        counts.append(("utt2num_frames", _int_values(tables["utt2num_frames"])))
    for i in range(len(counts)):
        for j in range(i + 1, len(counts)):
            (na, a), (nb, b) = counts[i], counts[j]
            restrict({u for u in keep if a.get(u) == b.get(u)}, f"frame counts of {na} and {nb} disagree")
    if backup:
        bdir = d / ".backup"
        bdir.mkdir(exist_ok=True)
        for name in [*kinds, "spk2utt"]:
            if (d / name).is_file():
                _shutil.copy2(d / name, bdir / name)
    n0 = len(tables["utt2spk"])
    source_utt2spk = tables["utt2spk"]
    speakers0 = set(utt2spk.values())
    speakers1 = {utt2spk[u] for u in keep}
    del tables, counts, utt2spk, all_utts   # big dirs: only what the filter needs stays in memory
    filter_datadir_parts(d, [(d, keep)], utt2spk=source_utt2spk)
    del source_utt2spk
    for why, n in reasons:
        report.append(f"dropped {n} utterances: {why}")
    if speakers0 - speakers1:
        report.append(f"dropped {len(speakers0 - speakers1)} speakers left without utterances")
    report.append(f"kept {len(keep)} of {n0} utterances ({n0 - len(keep)} dropped), {len(speakers1)} speakers")
    return report


# --------------------------------------------------------------------- split
def _balanced_chunks(sizes: list[int], n: int) -> list[tuple[int, int]]:
    """Cut a sequence of item sizes into ``n`` contiguous non-empty chunks of
    nearly equal total size; returns (start, end) index pairs. Each cut is the
    smallest index whose running total is closest to its share; found by
    bisection (the distance to the share is V-shaped along the running totals),
    so the cost does not grow with ``len(sizes) * n``."""
    total = sum(sizes)
    cum = list(_accumulate(sizes))
    bounds, start = [], 0
    for k in range(1, n):
        target = total * k / n
        lo, hi = start + 1, len(sizes) - (n - k)
        # cut i leaves cum[i-1] before it; candidates: both sides of the share and the range ends
        p = _bisect.bisect_left(cum, target)
        cands = set()
        for i in (p, p + 1, lo, hi):
            i = min(max(i, lo), hi)
            # the smallest cut in range with the same running total
            cands.add(max(lo, _bisect.bisect_left(cum, cum[i - 1]) + 1))
        best = min(cands, key=lambda i: (abs(cum[i - 1] - target), i))
        bounds.append((start, best))
        start = best
    bounds.append((start, len(sizes)))
    return bounds


def split_datadir(path: str | os.PathLike, n: int, *, per_spk: bool = False,
                  force: bool = False) -> tuple[list[Path], bool]:
    """Split a data dir into ``path/split{n}/{1..n}`` by utterance (contiguous,
    sizes within one) or, with ``per_spk``, by whole speakers (balanced by
    utterance count). An existing split newer than every source file, made the
    same way, is reused. Returns (part dirs, reused)."""
    d = Path(path)
    if n < 1:
        raise ValueError(f"cannot split into {n} parts")
    if not (d / "utt2spk").is_file():
        raise FileNotFoundError(f"{d}: has no utt2spk")
    out = d / f"split{n}"
    parts = [out / str(i) for i in range(1, n + 1)]
    stamp = out / ".split_done"
    mode = "per-spk" if per_spk else "per-utt"
    sources = [d / f for f in [*classify(d), "spk2utt", *VERBATIM] if (d / f).is_file()]
    # The stamp records how the split was made and from which files (a file
    # removed from the source makes the split stale too).
    stamp_text = mode + "\n" + " ".join(s.name for s in sources) + "\n"
    if not force and stamp.is_file() and stamp.read_text() == stamp_text \
            and all((p / "utt2spk").is_file() for p in parts):
        t = stamp.stat().st_mtime
        if all(s.stat().st_mtime <= t for s in sources):
            return parts, True
    utt2spk = read_first(d / "utt2spk")[0]
    utts = c_sorted(utt2spk)
    if per_spk:
        spk2utt = utt2spk_to_spk2utt(utt2spk)
        spks = list(spk2utt)  # sorted (utterance order follows speaker order)
        spks.sort(key=ckey)
        if len(spks) < n:
            raise ValueError(f"{d}: cannot split {len(spks)} speakers into {n} parts (use fewer jobs)")
        chunks = _balanced_chunks([len(spk2utt[s]) for s in spks], n)
        groups = [[u for s in spks[a:b] for u in spk2utt[s]] for a, b in chunks]
    else:
        if len(utts) < n:
            raise ValueError(f"{d}: cannot split {len(utts)} utterances into {n} parts (use fewer jobs)")
        q, r = divmod(len(utts), n)
        groups, i = [], 0
        for k in range(n):
            size = q + (1 if k < r else 0)
            groups.append(utts[i:i + size])
            i += size
    if stamp.exists():
        stamp.unlink()
    filter_datadir_parts(d, list(zip(parts, groups)))
    with atomic_open(stamp, "w") as f:
        f.write(stamp_text)
    # The stamp must not be older than what it vouches for, even on coarse clocks.
    now = _time.time()
    newest = max([s.stat().st_mtime for s in sources] + [now])
    os.utime(stamp, (newest, newest))
    return parts, False


# -------------------------------------------------------------------- subset
def select_utts(path: str | os.PathLike, *, utt_list=None, spk_list=None, first: int | None = None,
                last: int | None = None, random_n: int | None = None, seed: int = 0) -> list[str]:
    """Utterances of a data dir chosen by one rule (lists are files of ids,
    first column; first/last N in sorted order; N at random, seeded)."""
    d = Path(path)
    utt2spk = read_first(d / "utt2spk")[0]
    utts = c_sorted(utt2spk)
    if utt_list is not None:
        want = {k for _, k, _ in iter_lines(utt_list)}
        return [u for u in utts if u in want]
    if spk_list is not None:
        want = {k for _, k, _ in iter_lines(spk_list)}
        return [u for u in utts if utt2spk[u] in want]
    for name, v in (("first", first), ("last", last), ("random", random_n)):
        if v is not None and v > len(utts):
            raise ValueError(f"{d} has only {len(utts)} utterances, cannot take {name} {v}")
    if first is not None:
        return utts[:first]
    if last is not None:
        return utts[len(utts) - last:]
    if random_n is not None:
        chosen = set(_random.Random(seed).sample(utts, random_n))
        return [u for u in utts if u in chosen]
    raise ValueError("no selection rule given")


# ------------------------------------------------------------------- combine
class CombineError(ValueError):
    pass


def combine_datadirs(dest: str | os.PathLike, srcs: list) -> list[str]:
    """Combine data dirs into ``dest``: every table file present in all sources
    is merged (duplicate utterance ids are an error; a speaker/recording
    appearing in several sources must have the same value everywhere); files
    present in only some sources are left out with a warning. Files whose
    content does not change are not rewritten. Returns warning/report lines."""
    dest = Path(dest)
    srcs = [Path(s) for s in srcs]
    if not srcs:
        raise CombineError("no source data dirs given")
    for s in srcs:
        if not (s / "utt2spk").is_file():
            raise CombineError(f"{s}: not a data dir (no utt2spk)")
        if s.resolve() == dest.resolve() if dest.exists() else False:
            raise CombineError(f"{dest} is also a source; combine into a new dir")
    report: list[str] = []
    kinds_per = [classify(s) for s in srcs]
    seg_in = [(s / "segments").is_file() for s in srcs]
    names = set().union(*[set(k) for k in kinds_per])
    if any(seg_in) and not all(seg_in):
        # Give the dirs without segments whole-file segments (needs utt2dur).
        for s, has in zip(srcs, seg_in):
            if not has and not (s / "utt2dur").is_file():
                raise CombineError(f"{s} has no segments while other sources do, and no utt2dur to make "
                                   "whole-file segments from")
    # A list file (unknown_spk_utts) absent from a source means "none there": union them.
    common = [n for n in sorted(names, key=ckey)
              if n in UTT_LISTS or all(n in k or (n == "segments" and any(seg_in)) for k in kinds_per)]
    for n in sorted(names - set(common), key=ckey):
        have = [str(s) for s, k in zip(srcs, kinds_per) if n in k]
        lack = [str(s) for s, k in zip(srcs, kinds_per) if n not in k]
        report.append(f"warning: not combining {n}: present in {', '.join(have)} but missing from {', '.join(lack)}")
    merged: dict[str, dict[str, str]] = {}
    kind_of = {}
    for n in common:
        kind = next(k[n] for k in kinds_per if n in k)
        if n == "wav.scp" and any(seg_in):
            kind = "reco"
        kind_of[n] = kind
        table: dict[str, str] = {}
        origin: dict[str, Path] = {}
        dups = []
        for s, has_seg in zip(srcs, seg_in):
            if n == "segments" and not has_seg:
                t = {u: f"{u} 0 {float(v):.3f}" for u, v in read_first(s / "utt2dur")[0].items()}
            elif n in UTT_LISTS and not (s / n).is_file():
                t = {}
            else:
                t = read_first(s / n)[0]
            for k, v in t.items():
                if k in table:
                    if kind in ("utt", "uttlist"):
                        dups.append(f"{k} ({origin[k]} and {s})")
                        continue
                    if table[k] != v:
                        raise CombineError(f"{n}: '{k}' is '{table[k]}' in {origin[k]} but '{v}' in {s}")
                    continue
                table[k] = v
                origin[k] = s
        if dups:
            raise CombineError(f"{len(dups)} utterance ids occur in more than one source ({n}): {_names(dups)}")
        merged[n] = table
    dest.mkdir(parents=True, exist_ok=True)
    for n, t in merged.items():
        _write_if_changed(dest / n, _table_lines(t))
    spk2utt = utt2spk_to_spk2utt(merged["utt2spk"])
    _write_if_changed(dest / "spk2utt", [f"{s} {' '.join(us)}" for s, us in
                                         sorted(spk2utt.items(), key=lambda kv: ckey(kv[0]))])
    for n in classify(dest):
        if n not in merged:
            (dest / n).unlink()
            report.append(f"removed stale {n} from {dest}")
    report.append(f"combined {len(srcs)} dirs into {dest}: {len(merged['utt2spk'])} utterances, "
                  f"{len(spk2utt)} speakers; files: {', '.join(sorted(merged, key=ckey))}")
    return report


# ---------------------------------------------------------------------- copy
def copy_datadir(src: str | os.PathLike, dest: str | os.PathLike, *, utt_prefix: str = "",
                 utt_suffix: str = "", spk_prefix: str = "", spk_suffix: str = "") -> list[str]:
    """Copy a data dir, renaming utterances (``prefix + utt + suffix``) and
    speakers like Kaldi's copy_data_dir.sh; recordings (with segments) take the
    utterance prefix/suffix. Files are re-sorted. When utterance ids change, an
    ``utt2orig`` maps each new id to the source id (kept from the source if it
    has one)."""
    src, dest = Path(src), Path(dest)
    if not (src / "utt2spk").is_file():
        raise FileNotFoundError(f"{src}: has no utt2spk")
    if src.resolve() == (dest.resolve() if dest.exists() else None):
        raise ValueError("source and destination are the same dir")

    def mu(u):
        return f"{utt_prefix}{u}{utt_suffix}"

    def ms(s):
        return f"{spk_prefix}{s}{spk_suffix}"

    kinds = classify(src)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    utt2spk = {}
    for name, kind in kinds.items():
        t = read_first(src / name)[0]
        if name == "utt2spk":
            out = {mu(u): ms(s) for u, s in t.items()}
            utt2spk = out
        elif name == "segments":
            out = {}
            for u, v in t.items():
                f = v.split()
                if f:
                    f[0] = mu(f[0])
                out[mu(u)] = " ".join(f)
        elif kind == "utt":
            out = {mu(u): v for u, v in t.items()}
        elif kind == "uttlist":
            out = {mu(u): "" for u in t}
        elif kind == "spk":
            out = {ms(s): v for s, v in t.items()}
        elif kind == "reco":
            out = {mu(r): v for r, v in t.items()}
        else:
            continue
        _write_if_changed(dest / name, _table_lines(out))
        written.append(name)
    if (utt_prefix or utt_suffix) and "utt2orig" not in kinds:
        _write_if_changed(dest / "utt2orig", _table_lines({mu(u): u for u in read_first(src / "utt2spk")[0]}))
        written.append("utt2orig")
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    _write_if_changed(dest / "spk2utt", [f"{s} {' '.join(us)}" for s, us in
                                         sorted(spk2utt.items(), key=lambda kv: ckey(kv[0]))])
    written.append("spk2utt")
    for name in VERBATIM:
        if (src / name).is_file():
            _write_if_changed(dest / name, (src / name).read_text().splitlines())
    for name in classify(dest):
        if name not in written:
            (dest / name).unlink()
    return written


# ---------------------------------------------------------- propagate features
PROPAGATED = ("feats.scp", "vad.scp", "utt2num_frames", "gemaps_lld.scp", "gemaps.scp")


def subset_dirs(corpus_dir: str | os.PathLike) -> list[Path]:
    """Protocol subsets of an emotion corpus dir: data dirs below it other than
    all/, all_aug/ and split dirs (fold*/train, train, dev, test, ...)."""
    c = Path(corpus_dir)
    out = []
    for p in sorted(c.rglob("utt2spk")):
        sub = p.parent
        rel = sub.relative_to(c).parts
        if not rel or rel[0] in ("all", "all_aug") or any(_re.fullmatch(r"split\d+", x) for x in rel):
            continue
        out.append(sub)
    return out


def propagate_features(corpus_dir: str | os.PathLike) -> list[str]:
    """Copy the feature tables of ``all/`` (and ``all_aug/`` for augmented
    utterances) into every subset dir, filtered to the subset's utterances.
    Returns report lines; utterances lacking a feature are named."""
    c = Path(corpus_dir)
    srcs = [c / "all", c / "all_aug"]
    if not (c / "all" / "utt2spk").is_file():
        raise FileNotFoundError(f"{c}/all is not a data dir")
    tables: dict[str, dict[str, str]] = {}
    for name in PROPAGATED:
        for s in srcs:
            if (s / name).is_file():
                t = tables.setdefault(name, {})
                for k, v in read_first(s / name)[0].items():
                    t.setdefault(k, v)
    report = []
    if not tables:
        report.append(f"warning: {c}/all has none of {', '.join(PROPAGATED)}: nothing to propagate")
        return report
    for sub in subset_dirs(c):
        utts = set(read_first(sub / "utt2spk")[0])
        changed = []
        for name, t in tables.items():
            have = {u: t[u] for u in utts if u in t}
            missing = utts - set(have)
            if missing:
                report.append(f"warning: {sub}: {len(missing)} of {len(utts)} utterances lack {name} "
                              f"in all/: {_names(missing)}")
            if _write_if_changed(sub / name, _table_lines(have)):
                changed.append(name)
        report.append(f"{sub}: {len(utts)} utterances; "
                      + (f"updated {', '.join(changed)}" if changed else "already up to date"))
    return report


def _int_values(table: dict[str, str]) -> dict[str, int]:
    """The entries of a text table whose value is an integer (utt2num_frames);
    malformed lines are left to the format checks that report them."""
    out = {}
    for key, value in table.items():
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out
