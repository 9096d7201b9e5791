"""Checking a data dir: every problem, one sentence each (utils/validate_data_dir.sh)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .access import utt2spk_to_spk2utt
from .frames import int_values, scp_num_rows
from .tables import RECO_FILES, abbreviated, c_less, c_sorted, ckey, classify, iter_lines

Tables = dict[str, dict[str, str]]   # file name -> key -> value (the first of duplicated keys)


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
    problems: list[str] = []
    tables: Tables = {}
    for name in ["utt2spk", "spk2utt", *[n for n in kinds if n != "utt2spk"]]:
        if name in skip or not (d / name).is_file():
            continue
        tables[name], found = _read_checked(name, iter_lines(d / name), kinds.get(name) == "uttlist", max_per_kind)
        problems += found
    problems += _speaker_problems(tables)
    problems += _coverage_problems(tables, {n: k for n, k in kinds.items() if n not in skip})
    if not no_wav:
        problems += _recording_problems(tables)
    problems += _value_problems(tables)
    if not no_feats:
        problems += _frame_count_problems(d, tables)
    return problems


def _read_checked(name: str, entries, is_list: bool, max_per_kind: int) -> tuple[dict[str, str], list[str]]:
    """A table's first value of each key, and its duplicate keys, lines out of C
    order and lines without a value (a list file has none), ``max_per_kind`` of
    each named."""
    problems: list[str] = []
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
        if value == "" and not is_list:
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
    return first, problems


def _speaker_problems(tables: Tables) -> list[str]:
    """utt2spk: one-word speakers whose order follows the utterances'; spk2utt exactly what utt2spk says."""
    problems: list[str] = []
    utt2spk = tables["utt2spk"]
    utts = set(utt2spk)
    if not utts:
        problems.append("utt2spk is empty: no utterances")
    bad_spk = [u for u, s in utt2spk.items() if len(s.split()) != 1]
    if bad_spk:
        problems.append(f"utt2spk: {len(bad_spk)} lines whose speaker is not one word: {abbreviated(bad_spk)}")
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
                        f"utterances ({abbreviated(crossing)}); utterance ids must start with their speaker id")

    # spk2utt must be exactly what utt2spk says.
    if "spk2utt" not in tables:
        problems.append("spk2utt is missing (make it with utils/utt2spk_to_spk2utt.py utt2spk > spk2utt)")
    else:
        spk2utt = {s: v.split() for s, v in tables["spk2utt"].items()}
        expect = utt2spk_to_spk2utt(utt2spk)
        only_s = set(spk2utt) - set(expect)
        only_u = set(expect) - set(spk2utt)
        if only_s:
            problems.append(f"spk2utt has {len(only_s)} speakers not in utt2spk: {abbreviated(only_s)}")
        if only_u:
            problems.append(f"spk2utt lacks {len(only_u)} speakers of utt2spk: {abbreviated(only_u)}")
        differ = [s for s in set(spk2utt) & set(expect) if spk2utt[s] != expect[s]]
        if differ:
            problems.append(f"spk2utt and utt2spk disagree on the utterances of {len(differ)} speakers "
                            f"(or spk2utt lists them out of order): {abbreviated(differ)}")
    return problems


def _coverage_problems(tables: Tables, kinds: dict[str, str]) -> list[str]:
    """Every per-utterance file holds exactly the utterances of utt2spk, every
    per-speaker file speakers of utt2spk (spk2gender all of them, as m or f)."""
    problems: list[str] = []
    utts = set(tables["utt2spk"])
    speakers = set(tables["utt2spk"].values())
    for name, kind in kinds.items():
        if name == "utt2spk" or name not in tables:
            continue
        keys = set(tables[name])
        if kind in ("utt", "uttlist"):
            extra = keys - utts
            if extra:
                problems.append(f"{name} has {len(extra)} utterances not in utt2spk: {abbreviated(extra)}")
            if kind == "utt":
                missing = utts - keys
                if missing:
                    problems.append(f"{name} lacks {len(missing)} utterances of utt2spk: {abbreviated(missing)}")
        elif kind == "spk":
            extra = keys - speakers
            if extra:
                problems.append(f"{name} has {len(extra)} speakers not in utt2spk: {abbreviated(extra)}")
            if name == "spk2gender":
                missing = {s for s in speakers - keys if not s.startswith("unknown_")}
                if missing:
                    problems.append(f"spk2gender lacks {len(missing)} speakers: {abbreviated(missing)}")
                bad = [s for s, g in tables[name].items() if g not in ("m", "f")]
                if bad:
                    problems.append(f"spk2gender: {len(bad)} speakers with a gender other than m/f: "
                                    + abbreviated(f"{s}={tables[name][s]!r}" for s in bad))
    return problems


def _recording_problems(tables: Tables) -> list[str]:
    """wav.scp, segments and recordings: segments point into wav.scp with 0 <=
    start < end and use every recording; the audio files exist."""
    problems: list[str] = []
    if "wav.scp" not in tables:
        return ["wav.scp is missing"]
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
                            f"with 0 <= start < end: {abbreviated(bad_seg)}")
        no_rec = recs - set(wav)
        if no_rec:
            problems.append(f"segments names {len(no_rec)} recordings missing from wav.scp: {abbreviated(no_rec)}")
        unused = set(wav) - recs
        if unused:
            problems.append(f"wav.scp has {len(unused)} recordings no segment uses: {abbreviated(unused)}")
    absent, tilde = [], []
    for k, v in wav.items():
        v = v.strip()
        if v.startswith("~"):
            tilde.append(k)  # fopen() does no tilde expansion
        if v.endswith("|"):
            continue
        if not os.path.exists(v):
            m = re.fullmatch(r"(.+):\d+", v)  # Kaldi's ark:offset form
            if not (m and os.path.exists(m.group(1))):
                absent.append(f"{k} -> {v}")
    if absent:
        problems.append(f"wav.scp: {len(absent)} audio files do not exist: {abbreviated(absent, 3)}")
    if tilde:
        problems.append(f"wav.scp: {len(tilde)} paths start with '~' (write the full path): {abbreviated(tilde)}")
    return problems


def _value_problems(tables: Tables) -> list[str]:
    """utt2emo labels are one lower-case word; utt2dur and utt2num_frames positive."""
    problems: list[str] = []
    if "utt2emo" in tables:
        bad = [u for u, e in tables["utt2emo"].items() if not re.fullmatch(r"[a-z0-9_]+", e)]
        if bad:
            problems.append(f"utt2emo: {len(bad)} labels are not one lower-case word: "
                            + abbreviated(f"{u}={tables['utt2emo'][u]!r}" for u in bad))
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
                problems.append(f"{name}: {len(bad)} values are not positive numbers: {abbreviated(bad)}")
    return problems


def _frame_count_problems(d: Path, tables: Tables) -> list[str]:
    """feats.scp and vad.scp are readable, and they and utt2num_frames agree on the frames of each utterance."""
    problems: list[str] = []
    utts = set(tables["utt2spk"])
    counts: dict[str, dict[str, int]] = {}
    for name in ("feats.scp", "vad.scp"):
        if name in tables:
            rows, errs = scp_num_rows(d / name, utts)
            if errs:
                problems.append(f"{name}: {len(errs)} entries cannot be read: "
                                + abbreviated(f"{u} ({e})" for u, e in errs.items()))
            counts[name] = rows
    if "utt2num_frames" in tables:
        counts["utt2num_frames"] = int_values(tables["utt2num_frames"])
    names = list(counts)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = counts[names[i]], counts[names[j]]
            bad = [f"{u} ({a[u]} vs {b[u]})" for u in sorted(set(a) & set(b), key=ckey) if a[u] != b[u]]
            if bad:
                problems.append(f"{names[i]} and {names[j]} disagree on the number of frames of "
                                f"{len(bad)} utterances: {abbreviated(bad)}")
    return problems
