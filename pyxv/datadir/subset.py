"""Subsets of a data dir: choosing utterances (utils/subset_data_dir.sh) and
writing a data dir filtered to them, consistently in every file."""
from __future__ import annotations

import os
import random
from itertools import groupby
from pathlib import Path

from .tables import VERBATIM, c_sorted, classify, iter_lines, read_first, write_if_changed


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
            for i, group in groupby(keys, key=part_of.__getitem__):
                lines_of = group if kind == "uttlist" else \
                    (f"{k} {v}" if (v := table[k]) != "" else k for k in group)
                write_if_changed(dests[i] / name, lines_of)
                done.add(i)
            for i in every - done:
                write_if_changed(dests[i] / name, [])
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
                write_if_changed(dest / name, ls)
        del lines, table, keys
        written.append(name)
    spk2utt: list[dict[str, list[str]]] = [{} for _ in parts]
    for u in order:
        spk2utt[part_of[u]].setdefault(utt2spk[u], []).append(u)
    for dest, s2u in zip(dests, spk2utt):
        write_if_changed(dest / "spk2utt", [f"{s} {' '.join(s2u[s])}" for s in c_sorted(s2u)])
    written.append("spk2utt")
    for dest in dests:
        same = src.resolve() == dest.resolve()
        for name in VERBATIM:
            if (src / name).is_file() and not same:
                write_if_changed(dest / name, (src / name).read_text().splitlines())
        if remove_stale and not same:
            for name, kind in classify(dest).items():
                if name not in written:
                    (dest / name).unlink()
    return written


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
        chosen = set(random.Random(seed).sample(utts, random_n))
        return [u for u in utts if u in chosen]
    raise ValueError("no selection rule given")
