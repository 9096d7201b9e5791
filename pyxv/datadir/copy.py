"""Copying a data dir with renamed utterances and speakers (utils/copy_data_dir.sh)."""
from __future__ import annotations

import os
from pathlib import Path

from .access import utt2spk_to_spk2utt
from .tables import VERBATIM, ckey, classify, read_first, table_lines, write_if_changed


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
        write_if_changed(dest / name, table_lines(out))
        written.append(name)
    if (utt_prefix or utt_suffix) and "utt2orig" not in kinds:
        write_if_changed(dest / "utt2orig", table_lines({mu(u): u for u in read_first(src / "utt2spk")[0]}))
        written.append("utt2orig")
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    write_if_changed(dest / "spk2utt", [f"{s} {' '.join(us)}" for s, us in
                                         sorted(spk2utt.items(), key=lambda kv: ckey(kv[0]))])
    written.append("spk2utt")
    for name in VERBATIM:
        if (src / name).is_file():
            write_if_changed(dest / name, (src / name).read_text().splitlines())
    for name in classify(dest):
        if name not in written:
            (dest / name).unlink()
    return written
