"""Combining data dirs into one (utils/combine_data.sh)."""
from __future__ import annotations

import os
from pathlib import Path

from .access import utt2spk_to_spk2utt
from .tables import UTT_LISTS, abbreviated, ckey, classify, read_first, table_lines, write_if_changed


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
            raise CombineError(f"{len(dups)} utterance ids occur in more than one source ({n}): {abbreviated(dups)}")
        merged[n] = table
    dest.mkdir(parents=True, exist_ok=True)
    for n, t in merged.items():
        write_if_changed(dest / n, table_lines(t))
    spk2utt = utt2spk_to_spk2utt(merged["utt2spk"])
    write_if_changed(dest / "spk2utt", [f"{s} {' '.join(us)}" for s, us in
                                         sorted(spk2utt.items(), key=lambda kv: ckey(kv[0]))])
    for n in classify(dest):
        if n not in merged:
            (dest / n).unlink()
            report.append(f"removed stale {n} from {dest}")
    report.append(f"combined {len(srcs)} dirs into {dest}: {len(merged['utt2spk'])} utterances, "
                  f"{len(spk2utt)} speakers; files: {', '.join(sorted(merged, key=ckey))}")
    return report
