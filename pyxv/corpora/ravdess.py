"""RAVDESS speech: ``Actor_NN/MM-VC-EE-II-SS-RR-AA.{wav,flac}``.

Fields: modality (03 audio-only), vocal channel (01 speech, 02 song),
emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful,
07 disgust, 08 surprised), intensity, statement, repetition, actor (odd male,
even female). 4 classes: neutral, happy, sad, angry (calm is not neutral):
672 clips of 24 actors (96 neutral, 192 each of the others).

Ids: speaker ``ravdess_aNN``, utterance ``ravdess_aNN-<file stem>``.
Protocol: ``fold1..6/{train,test}``; fold k tests actors 4k-3..4k.
"""
from __future__ import annotations

import os
import re

from .common import (Corpus, PrepError, Utt, carve_dev, check_audio, log, require_dir, utts_of)

TOOL = "prepare_ravdess"
EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}
NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def spk_id(actor: int) -> str:
    return f"ravdess_a{actor:02d}"


def read_ravdess(root) -> list[Utt]:
    root = require_dir(root, "RAVDESS root")
    actors = sorted(p for p in root.glob("Actor_*") if p.is_dir())
    if not actors:
        raise PrepError(f"RAVDESS root {root} has no Actor_NN folders")
    utts, odd = [], []
    for adir in actors:
        for f in sorted(adir.iterdir()):
            if f.suffix.lower() not in (".wav", ".flac"):
                continue
            m = NAME.match(f.stem)
            if not m:
                odd.append(f"{f}: name is not MM-VC-EE-II-SS-RR-AA")
                continue
            modality, channel, emo, _inten, _stmt, _rep, actor = m.groups()
            if channel != "01" or modality not in ("03", "01"):
                continue   # song, or not audio
            if emo not in EMOTIONS:
                continue   # calm, fearful, disgust, surprised
            a = int(actor)
            if adir.name != f"Actor_{actor}":
                odd.append(f"{f}: actor {actor} in the name but folder {adir.name}")
                continue
            utts.append(Utt(utt=f"{spk_id(a)}-{f.stem}", spk=spk_id(a), path=os.path.abspath(f),
                            emotion=EMOTIONS[emo], gender="m" if a % 2 == 1 else "f"))
    for msg in odd[:20]:
        log(TOOL, f"WARNING: skipping {msg}")
    if odd:
        log(TOOL, f"WARNING: skipped {len(odd)} files with unexpected names")
    if not utts:
        raise PrepError(f"RAVDESS root {root}: no speech clips (.wav/.flac) of the 4 classes found")
    return utts


def prepare_ravdess(root, data_dir, *, nj: int = 2, dev_speakers: int = 0, seed: int = 0) -> Corpus:
    """Write ``data_dir/all`` and ``data_dir/fold{1..6}/{train,[dev,]test}``."""
    corpus = Corpus(check_audio(read_ravdess(root), tool=TOOL, nj=nj), tool=TOOL)
    subsets = {}
    spks = corpus.speakers
    for k in range(1, 7):
        test = [spk_id(a) for a in range(4 * k - 3, 4 * k + 1) if spk_id(a) in spks]
        rest = {s: corpus.spk2gender[s] for s in spks if s not in test}
        dev = carve_dev(rest, dev_speakers, seed + k) if dev_speakers else []
        if not test:
            log(TOOL, f"WARNING: fold{k}: none of actors {4 * k - 3}-{4 * k} present; fold left out")
            continue
        subsets[f"fold{k}/train"] = utts_of(corpus, [s for s in rest if s not in dev])
        if dev:
            subsets[f"fold{k}/dev"] = utts_of(corpus, dev)
        subsets[f"fold{k}/test"] = utts_of(corpus, test)
    corpus.write_protocol(data_dir, subsets)
    return corpus
