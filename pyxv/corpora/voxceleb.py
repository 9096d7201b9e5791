"""VoxCeleb 1/2 for x-vector pre-training: ``wav/<spk>/<video>/<n>.wav``.

Utterance ``<spk>-<video>-<n>``, speaker ``<spk>`` (``id10001``). Only WAV is
read; VoxCeleb2 ships AAC (``aac/.../*.m4a``), convert it first (see
:data:`M4A_HOWTO`). Filters: ``min_dur`` (seconds, per utterance) then
``min_utts`` (per speaker).

Gender comes from ``vox1_meta.csv`` / ``vox2_meta.csv`` (found in the root or
its parent, or given) when they cover every kept speaker; otherwise the data
dir has no ``spk2gender`` (Kaldi allows only m/f there), and the log says so.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .common import Corpus, PrepError, Utt, check_audio, log, require_dir, sanitize_id

TOOL = "prepare_voxceleb"
M4A_HOWTO = ("VoxCeleb2 is distributed as AAC (.m4a); convert it to 16 kHz mono WAV first, e.g.\n"
             "  cd <voxceleb2-root> && find aac -name '*.m4a' | while read f; do o=wav/${f#aac/}; "
             "o=${o%.m4a}.wav; mkdir -p \"$(dirname \"$o\")\"; "
             "ffmpeg -nostdin -loglevel error -i \"$f\" -ac 1 -ar 16000 \"$o\"; done\n"
             "then pass the folder that holds wav/.")


def read_meta(paths) -> dict[str, str]:
    """Speaker -> m/f from VoxCeleb meta files (tab- or comma-separated)."""
    out: dict[str, str] = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise PrepError(f"VoxCeleb meta file {p} does not exist")
        text = p.read_text(encoding="utf-8", errors="replace").splitlines()
        for lineno, line in enumerate(text, 1):
            fields = [x.strip() for x in re.split(r"[\t,]", line)]
            if lineno == 1 and not re.fullmatch(r"id\d+", fields[0]):
                continue   # header
            if len(fields) < 3 or not fields[0]:
                continue
            g = fields[2].lower()
            if g in ("m", "f"):
                out[fields[0]] = g
            elif g in ("male", "female"):
                out[fields[0]] = g[0]
    return out


def read_voxceleb(root, *, meta=None) -> tuple[list[Utt], dict[str, str]]:
    root = require_dir(root, "VoxCeleb root")
    wav = root / "wav" if (root / "wav").is_dir() else root
    spk_dirs = sorted(p for p in wav.iterdir() if p.is_dir() and not p.name.startswith("."))
    utts = []
    for sd in spk_dirs:
        for vd in sorted(p for p in sd.iterdir() if p.is_dir()):
            for f in sorted(vd.glob("*.wav")):
                spk = sanitize_id(sd.name)
                utts.append(Utt(utt=f"{spk}-{sanitize_id(vd.name)}-{sanitize_id(f.stem)}", spk=spk,
                                path=os.path.abspath(f)))
    if not utts:
        if any(root.rglob("*.m4a")):
            raise PrepError(f"VoxCeleb: {root} holds .m4a files but no wav/<spk>/<video>/<n>.wav.\n{M4A_HOWTO}")
        raise PrepError(f"VoxCeleb: no wav/<spk>/<video>/<n>.wav files under {root}")
    if meta is None:
        meta = [p for d in (root, root.parent) for p in (d / "vox1_meta.csv", d / "vox2_meta.csv") if p.is_file()]
    return utts, read_meta(meta) if meta else {}


def prepare_voxceleb(root, data_dir, *, min_dur: float = 0.0, min_utts: int = 0, meta=None,
                     nj: int = 2) -> Corpus:
    """Write one data dir (``data_dir`` itself, e.g. ``data/pretrain/train``)."""
    utts, spk2g = read_voxceleb(root, meta=meta)
    log(TOOL, f"{root}: {len(utts)} wav files of {len({u.spk for u in utts})} speakers")
    utts = check_audio(utts, tool=TOOL, nj=nj)
    n0 = len(utts)
    utts = [u for u in utts if u.dur >= min_dur]
    if min_dur > 0:
        log(TOOL, f"--min-dur {min_dur}: left out {n0 - len(utts)} utterances")
    per: dict[str, int] = {}
    for u in utts:
        per[u.spk] = per.get(u.spk, 0) + 1
    few = {s for s, n in per.items() if n < min_utts}
    if min_utts > 0:
        log(TOOL, f"--min-utts {min_utts}: left out {len(few)} speakers "
                  f"({sum(per[s] for s in few)} utterances)")
    utts = [u for u in utts if u.spk not in few]
    if not utts:
        raise PrepError(f"VoxCeleb: no utterances left after the filters (min_dur={min_dur}, min_utts={min_utts})")
    spks = {u.spk for u in utts}
    if spk2g and spks <= set(spk2g):
        for u in utts:
            u.gender = spk2g[u.spk]
    else:
        log(TOOL, "NOTE: no gender for " + (f"{len(spks - set(spk2g))} speakers" if spk2g else "any speaker")
            + " (no vox1_meta.csv/vox2_meta.csv covering them): writing no spk2gender")
    corpus = Corpus(utts, tool=TOOL)
    corpus.write(data_dir)
    log(TOOL, f"{data_dir}: {corpus.summary()}")
    return corpus
