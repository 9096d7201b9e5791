"""Feature tables of an emotion corpus's ``all/`` copied into its protocol
subsets (utils/propagate_features.sh)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .tables import abbreviated, read_first, table_lines, write_if_changed


PROPAGATED = ("feats.scp", "vad.scp", "utt2num_frames", "gemaps_lld.scp", "gemaps.scp")


def subset_dirs(corpus_dir: str | os.PathLike) -> list[Path]:
    """Protocol subsets of an emotion corpus dir: data dirs below it other than
    all/, all_aug/ and split dirs (fold*/train, train, dev, test, ...)."""
    c = Path(corpus_dir)
    out = []
    for p in sorted(c.rglob("utt2spk")):
        sub = p.parent
        rel = sub.relative_to(c).parts
        if not rel or rel[0] in ("all", "all_aug") or any(re.fullmatch(r"split\d+", x) for x in rel):
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
                              f"in all/: {abbreviated(missing)}")
            if write_if_changed(sub / name, table_lines(have)):
                changed.append(name)
        report.append(f"{sub}: {len(utts)} utterances; "
                      + (f"updated {', '.join(changed)}" if changed else "already up to date"))
    return report
