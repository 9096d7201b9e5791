"""MUSAN and RIRS_NOISES as data dirs for augmentation.

MUSAN: ``musan/{noise,music,speech}/<sub>/*.wav`` -> ``musan_noise``,
``musan_music``, ``musan_speech`` (utterance = file stem, each its own
"speaker"). Music with vocals is left out when the ``ANNOTATIONS`` files say
so (Kaldi's ``--use-vocals false``), unless ``use_vocals``.

RIRS_NOISES: ``RIRS_NOISES/simulated_rirs/<roomtype>/RoomNNN/RoomNNN-NNNNN.wav``
-> ``rirs`` with utterance ``<roomtype>-RoomNNN-NNNNN`` and speaker (room)
``<roomtype>-RoomNNN``, as in Kaldi's ``rir_list``.

These dirs have wav.scp, utt2spk, spk2utt, utt2dur and no spk2gender or
utt2emo (they are not speech of known speakers).
"""
from __future__ import annotations

import os
from pathlib import Path

from .common import Corpus, PrepError, Utt, check_audio, log, sanitize_id

MUSAN_TYPES = ("noise", "music", "speech")


def _find_root(root: Path, child: str, what: str) -> Path:
    if (root / child).is_dir():
        return root
    for sub in root.iterdir() if root.is_dir() else []:
        if sub.is_dir() and (sub / child).is_dir():
            return sub
    raise PrepError(f"{what}: {root} has no {child}/ folder (expected the {what} layout)")


def _vocal_music(music_dir: Path) -> set[str]:
    """Stems of music files whose ANNOTATIONS say they have vocals (``Y``)."""
    vocal: set[str] = set()
    for ann in music_dir.glob("*/ANNOTATIONS"):
        for line in ann.read_text(errors="replace").splitlines():
            f = line.split()
            if len(f) >= 3 and f[2] in ("Y", "N"):
                if f[2] == "Y":
                    vocal.add(f[0])
    return vocal


def prepare_musan(root, out_dir, *, nj: int = 2, use_vocals: bool = False,
                  tool: str = "prepare_musan") -> dict[str, Corpus]:
    root = Path(root)
    if not root.exists():
        raise PrepError(f"MUSAN root {root} does not exist")
    root = _find_root(root, "noise", "MUSAN")
    out: dict[str, Corpus] = {}
    for kind in MUSAN_TYPES:
        d = root / kind
        if not d.is_dir():
            raise PrepError(f"MUSAN: {d} does not exist")
        files = sorted(d.rglob("*.wav"))
        if not use_vocals and kind == "music":
            vocal = _vocal_music(d)
            if vocal:
                n0 = len(files)
                files = [f for f in files if f.stem not in vocal]
                log(tool, f"music: left out {n0 - len(files)} files with vocals (ANNOTATIONS)")
        if not files:
            raise PrepError(f"MUSAN: no .wav files under {d}")
        utts, seen = [], set()
        for f in files:
            uid = sanitize_id(f.stem)
            if uid in seen:
                uid = sanitize_id(f"{f.parent.name}-{f.stem}")
            seen.add(uid)
            utts.append(Utt(utt=uid, spk=uid, path=os.path.abspath(f)))
        c = Corpus(check_audio(utts, tool=tool, nj=nj), tool=tool)
        if len(c) == 0:
            raise PrepError(f"MUSAN: no readable audio under {d}")
        c.write(Path(out_dir) / f"musan_{kind}")
        log(tool, f"{out_dir}/musan_{kind}: {len(c)} files, "
                  f"{sum(u.dur for u in c.utts.values()) / 60:.1f} min")
        out[kind] = c
    return out


def prepare_rirs(root, out_dir, *, nj: int = 2, rooms=("smallroom", "mediumroom"),
                 tool: str = "prepare_rirs") -> Corpus:
    root = Path(root)
    if not root.exists():
        raise PrepError(f"RIRS_NOISES root {root} does not exist")
    root = _find_root(root, "simulated_rirs", "RIRS_NOISES")
    utts = []
    for rt in rooms:
        d = root / "simulated_rirs" / rt
        if not d.is_dir():
            raise PrepError(f"RIRS_NOISES: {d} does not exist")
        for f in sorted(d.glob("Room*/Room*-*.wav")):
            room = f.parent.name
            spk = sanitize_id(f"{rt}-{room}")
            utt = sanitize_id(f"{rt}-{f.stem}")
            if not utt.startswith(spk):  # file not named after its room folder
                utt = f"{spk}-{sanitize_id(f.stem)}"
            utts.append(Utt(utt=utt, spk=spk, path=os.path.abspath(f)))
    if not utts:
        raise PrepError(f"RIRS_NOISES: no Room*/Room*-*.wav under {root}/simulated_rirs/{{{','.join(rooms)}}}")
    c = Corpus(check_audio(utts, tool=tool, nj=nj), tool=tool)
    if len(c) == 0:
        raise PrepError(f"RIRS_NOISES: no readable impulse responses under {root}")
    out = Path(out_dir)
    c.write(out)
    log(tool, f"{out}: {len(c)} impulse responses from {len(c.speakers)} rooms")
    return c
