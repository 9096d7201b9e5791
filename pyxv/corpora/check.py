"""Checks of prepared data dirs that the preparers and their tests rely on
(a subset of ``utils/validate_data_dir.sh``, usable without it).

    python -m pyxv.corpora.check data/demo/all [more dirs...]
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..io import read_table


def _sorted_unique(path: Path) -> list[str]:
    problems = []
    keys = [line.split(None, 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    enc = [k.encode() for k in keys]
    if enc != sorted(enc):
        problems.append(f"{path}: not sorted in C-locale order")
    if len(set(keys)) != len(keys):
        problems.append(f"{path}: duplicate keys")
    return problems


def check_datadir(d: str | Path, *, emotions: bool | None = None) -> list[str]:
    """Return a list of problems (empty when the dir is consistent).

    ``emotions``: True requires utt2emo, False forbids nothing, None checks it
    only when present.
    """
    d = Path(d)
    if not d.is_dir():
        return [f"{d}: not a directory"]
    probs: list[str] = []
    for name in ("wav.scp", "utt2spk", "spk2utt", "utt2dur"):
        if not (d / name).is_file():
            probs.append(f"{d}: {name} is missing")
    if emotions and not (d / "utt2emo").is_file():
        probs.append(f"{d}: utt2emo is missing")
    if probs:
        return probs
    for f in sorted(d.iterdir()):
        if f.is_file() and f.name in ("wav.scp", "utt2spk", "spk2utt", "utt2dur", "utt2emo",
                                      "spk2gender", "segments"):
            probs += _sorted_unique(f)
    utt2spk = read_table(d / "utt2spk")
    spk2utt = read_table(d / "spk2utt", split=True)
    utts = set(utt2spk)
    for u, s in utt2spk.items():
        if not u.startswith(s):
            probs.append(f"{d}/utt2spk: utterance {u} does not start with its speaker {s}")
            break
    inv: dict[str, set] = {}
    for u, s in utt2spk.items():
        inv.setdefault(s, set()).add(u)
    if {s: set(v) for s, v in spk2utt.items()} != inv:
        probs.append(f"{d}/spk2utt does not match utt2spk")
    wav = read_table(d / "wav.scp")
    if (d / "segments").is_file():
        seg = read_table(d / "segments", split=True)
        if set(seg) != utts:
            probs.append(f"{d}/segments keys differ from utt2spk")
        recs = {v[0] for v in seg.values()}
        if not recs <= set(wav):
            probs.append(f"{d}/segments names recordings missing from wav.scp")
        for u, v in seg.items():
            if len(v) != 3 or float(v[2]) <= float(v[1]):
                probs.append(f"{d}/segments: bad line for {u}")
                break
    elif set(wav) != utts:
        probs.append(f"{d}/wav.scp keys differ from utt2spk ({len(wav)} vs {len(utts)})")
    dur = read_table(d / "utt2dur")
    if set(dur) != utts:
        probs.append(f"{d}/utt2dur keys differ from utt2spk")
    elif any(float(v) <= 0 for v in dur.values()):
        probs.append(f"{d}/utt2dur has non-positive durations")
    if (d / "spk2gender").is_file():
        g = read_table(d / "spk2gender")
        if set(g) - set(spk2utt) or {s for s in set(spk2utt) - set(g) if not s.startswith("unknown_")}:
            probs.append(f"{d}/spk2gender speakers differ from spk2utt")
        bad = [k for k, v in g.items() if v not in ("m", "f")]
        if bad:
            probs.append(f"{d}/spk2gender: gender of {bad[0]} is not m/f")
    if (d / "utt2emo").is_file():
        e = read_table(d / "utt2emo")
        if set(e) != utts:
            probs.append(f"{d}/utt2emo keys differ from utt2spk")
        if any(v != v.lower() or not v for v in e.values()):
            probs.append(f"{d}/utt2emo: labels must be lower case")
    if (d / "unknown_spk_utts").is_file():
        unk = set((d / "unknown_spk_utts").read_text().split())
        if not unk <= utts:
            probs.append(f"{d}/unknown_spk_utts names utterances not in utt2spk")
    return probs


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m pyxv.corpora.check <data-dir> [<data-dir>...]", file=sys.stderr)
        return 2
    bad = 0
    for d in argv:
        probs = check_datadir(d)
        for p in probs:
            print(f"check: {p}", file=sys.stderr)
        bad += bool(probs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
