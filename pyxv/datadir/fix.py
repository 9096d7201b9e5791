"""Making a data dir consistent (utils/fix_data_dir.sh)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .frames import int_values, scp_num_rows
from .subset import filter_datadir_parts
from .tables import classify, read_first, read_keys


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
        counts.append(("utt2num_frames", int_values(tables["utt2num_frames"])))
    for i in range(len(counts)):
        for j in range(i + 1, len(counts)):
            (na, a), (nb, b) = counts[i], counts[j]
            restrict({u for u in keep if a.get(u) == b.get(u)}, f"frame counts of {na} and {nb} disagree")
    if backup:
        bdir = d / ".backup"
        bdir.mkdir(exist_ok=True)
        for name in [*kinds, "spk2utt"]:
            if (d / name).is_file():
                shutil.copy2(d / name, bdir / name)
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
