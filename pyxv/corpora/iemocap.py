"""IEMOCAP: ``IEMOCAP_full_release/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt``
(consensus labels; the sub-folders are ignored) and
``Session{n}/sentences/wav/<dialog>/<utt>.wav``.

A label line (tab-separated)::

    [6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]

other lines (``C-``/``A-`` annotator lines, ``%`` headers, blanks) are skipped;
a line that starts with ``[`` but does not parse is an error naming file and
line. 4 classes: ang angry, sad sad, neu neutral, hap and exc happy; the rest
(fru fea sur dis oth xxx) is left out. 5531 utterances on the full release.

Speaker: the session plus the gender letter that starts the LAST field of the
utterance name (``Ses01F_impro01_M003`` is the male actor of session 1); ids
``Ses01M``, utterance ``Ses01M-Ses01F_impro01_M003``.

Protocol: leave-one-session-out ``fold{1..5}/{train,dev,test}``: test is
session k; dev (``dev_speakers``, default 2) is carved by speaker from the
training sessions: the speakers of the next session (k+1, cyclically), female
first; train is the rest.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .common import Corpus, PrepError, Utt, check_audio, log, require_dir, utts_of

TOOL = "prepare_iemocap"
CLASSES = {"ang": "angry", "sad": "sad", "neu": "neutral", "hap": "happy", "exc": "happy"}
ALL_CODES = {"neu", "hap", "exc", "sad", "ang", "fru", "fea", "sur", "dis", "oth", "xxx"}
LINE = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*$")
UTT = re.compile(r"^Ses0([1-5])([FM])_(.+)_([FM])(\d{3})$")


def speaker_of(name: str) -> tuple[str, str]:
    """(speaker id, gender) of an utterance name, from its last field's letter."""
    m = UTT.match(name)
    if not m:
        raise ValueError(f"utterance name {name!r} is not Ses0N[FM]_<dialog>_[FM]NNN")
    session, letter = m.group(1), m.group(4)
    return f"Ses0{session}{letter}", letter.lower()


def parse_label_file(path: Path) -> list[tuple[str, str, float, float]]:
    """(utterance name, code, start, end) of each label line; errors name file:line."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.startswith("["):
            continue
        m = LINE.match(line.strip())
        if not m:
            raise PrepError(f"{path}:{lineno}: cannot parse label line {line.strip()!r} "
                            "(expected '[start - end]<TAB>utt<TAB>code<TAB>[v, a, d]')")
        start, end, name, code = float(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
        if code not in ALL_CODES:
            raise PrepError(f"{path}:{lineno}: unknown emotion code {code!r} "
                            f"(expected one of {' '.join(sorted(ALL_CODES))})")
        if not UTT.match(name):
            raise PrepError(f"{path}:{lineno}: utterance name {name!r} is not Ses0N[FM]_<dialog>_[FM]NNN")
        out.append((name, code, start, end))
    return out


def read_iemocap(root) -> list[Utt]:
    root = require_dir(root, "IEMOCAP root")
    sessions = [n for n in range(1, 6) if (root / f"Session{n}").is_dir()]
    if not sessions:
        raise PrepError(f"IEMOCAP root {root} has no Session1..Session5 folders "
                        "(expected IEMOCAP_full_release/)")
    missing = sorted(set(range(1, 6)) - set(sessions))
    if missing:
        log(TOOL, f"WARNING: {root} lacks Session{', Session'.join(map(str, missing))}")
    # Every label file first: a missing or broken one stops before any work.
    labels = []
    for n in sessions:
        emo_dir = root / f"Session{n}" / "dialog" / "EmoEvaluation"
        if not emo_dir.is_dir():
            raise PrepError(f"IEMOCAP: label folder {emo_dir} does not exist")
        files = sorted(p for p in emo_dir.glob("*.txt") if not p.name.startswith("."))
        if not files:
            raise PrepError(f"IEMOCAP: no label files (*.txt) in {emo_dir}")
        for f in files:
            for name, code, _s, _e in parse_label_file(f):
                labels.append((n, f, name, code))
    utts, counts, seen = [], {}, {}
    for n, f, name, code in labels:
        counts[code] = counts.get(code, 0) + 1
        if name in seen:
            raise PrepError(f"{f}: utterance {name} is labelled again (first in {seen[name]})")
        seen[name] = f
        if code not in CLASSES:
            continue
        if name[4] != str(n):
            raise PrepError(f"{f}: utterance {name} belongs to another session than Session{n}")
        spk, gender = speaker_of(name)
        dialog = name.rsplit("_", 1)[0]
        wav = root / f"Session{n}" / "sentences" / "wav" / dialog / f"{name}.wav"
        utts.append(Utt(utt=f"{spk}-{name}", spk=spk, path=os.path.abspath(wav),
                        emotion=CLASSES[code], gender=gender))
    log(TOOL, f"{len(labels)} labelled utterances: "
              + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
              + f"; keeping {len(utts)} of the 4 classes (exc merged into happy)")
    if not utts:
        raise PrepError(f"IEMOCAP: no utterances of the 4 classes under {root}")
    return utts


def prepare_iemocap(root, data_dir, *, nj: int = 2, dev_speakers: int = 2) -> Corpus:
    """Write ``data_dir/all`` and ``data_dir/fold{k}/{train,dev,test}``."""
    corpus = Corpus(check_audio(read_iemocap(root), tool=TOOL, nj=nj), tool=TOOL)
    if len(corpus) == 0:
        raise PrepError(f"IEMOCAP: none of the audio under {root} is readable")
    sess_of = lambda s: int(s[4])
    sessions = sorted({sess_of(s) for s in corpus.speakers})
    if len(sessions) < 2:
        raise PrepError("IEMOCAP: leave-one-session-out needs at least 2 sessions")
    subsets = {}
    for k in sessions:
        test = [s for s in corpus.speakers if sess_of(s) == k]
        others = [x for x in sessions if x != k]
        order = others[others.index(next((x for x in others if x > k), others[0])):] + \
            others[:others.index(next((x for x in others if x > k), others[0]))]
        cand = [s for x in order for s in sorted((s for s in corpus.speakers if sess_of(s) == x),
                                                 key=lambda s: s[-1] != "F")]
        dev = cand[:dev_speakers] if len(order) > 1 else []
        train = [s for s in corpus.speakers if sess_of(s) != k and s not in dev]
        subsets[f"fold{k}/train"] = utts_of(corpus, train)
        if dev:
            subsets[f"fold{k}/dev"] = utts_of(corpus, dev)
        subsets[f"fold{k}/test"] = utts_of(corpus, test)
    corpus.write_protocol(data_dir, subsets)
    return corpus
