"""MSP-Podcast (releases 1.6 on, or a user-built CSV in their layout):
``Audios/<FileName>`` and ``Labels/labels_concensus.csv`` (the corpus's own
spelling; ``labels_consensus.csv`` is accepted too) with columns
``FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set``.

5 classes: A angry, H happy, S sad, N neutral, D disgust (U F C O X are left
out). Protocol: ``train`` (Train), ``dev`` (Development or Validation),
``test`` (the chosen test partition, default Test1); ``all`` is their union.

Speakers: ``msp_<SpkrID>`` (numbers zero-padded to 4 digits). ``Unknown``
speakers: each utterance becomes its own pseudo-speaker ``unknown_<FileStem>``
(utterance id = speaker id), listed in ``unknown_spk_utts`` so that speaker-
verification trials skip them; they stay in the emotion data.

Release 1.4 (the paper's) shipped labels, partitions and speaker ids as
separate text files. Build a CSV with the columns above from them (one row per
file; EmoAct/EmoVal/EmoDom may be empty) and pass it as ``labels``.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from .common import Corpus, PrepError, Utt, check_audio, log, require_dir, sanitize_id

TOOL = "prepare_msp_podcast"
CLASSES = {"A": "angry", "H": "happy", "S": "sad", "N": "neutral", "D": "disgust"}
ALL_CLASSES = set("ASHUFDCNOX")
REQUIRED = ("FileName", "EmoClass", "SpkrID", "Gender", "Split_Set")
LABEL_NAMES = ("labels_concensus.csv", "labels_consensus.csv")
HOWTO = ("MSP-Podcast: expected Labels/labels_concensus.csv with columns "
         "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set (releases 1.6 and later). "
         "For release 1.4, build such a CSV from its label, partition and speaker files "
         "and pass it with --labels.")


def _spk(raw: str) -> str | None:
    raw = raw.strip()
    if not raw or raw.lower() in ("unknown", "nan", "-1"):
        return None
    if re.fullmatch(r"\d+", raw):
        return f"msp_{int(raw):04d}"
    return f"msp_{sanitize_id(raw)}"


def find_labels(root: Path) -> Path:
    for name in LABEL_NAMES:
        for p in (root / "Labels" / name, root / name):
            if p.is_file():
                return p
    raise PrepError(f"{HOWTO} Not found under {root}.")


def read_msp_podcast(root, *, labels=None, test_set: str = "Test1") -> list[Utt]:
    root = require_dir(root, "MSP-Podcast root")
    labels = Path(labels) if labels else find_labels(root)
    if not labels.is_file():
        raise PrepError(f"MSP-Podcast label file {labels} does not exist")
    audio = root / "Audios" if (root / "Audios").is_dir() else root / "Audio"
    require_dir(audio, "MSP-Podcast audio folder (Audios/)")
    want = {"train": "train", "development": "dev", "validation": "dev", test_set.lower(): "test"}
    utts, dropped_cls, dropped_split, no_gender = [], 0, {}, []
    with open(labels, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise PrepError(f"{labels}:1: missing column(s) {', '.join(missing)}. {HOWTO}")
        spk_gender: dict[str, str] = {}
        rows = []
        for lineno, row in enumerate(reader, 2):
            get = lambda c: (row.get(c) or "").strip()
            name, cls, split = get("FileName"), get("EmoClass"), get("Split_Set")
            if not name or cls not in ALL_CLASSES or not re.fullmatch(r"Train|Development|Validation|Test\d*", split):
                raise PrepError(f"{labels}:{lineno}: cannot parse row (FileName={name!r}, EmoClass={cls!r}, "
                                f"Split_Set={split!r}); EmoClass must be one of {''.join(sorted(ALL_CLASSES))}, "
                                "Split_Set Train/Development/Validation/TestN")
            g = {"male": "m", "female": "f"}.get(get("Gender").lower())
            spk = _spk(get("SpkrID"))
            if spk and g:
                if spk_gender.setdefault(spk, g) != g:
                    raise PrepError(f"{labels}:{lineno}: speaker {get('SpkrID')} has two genders")
            rows.append((lineno, name, cls, split, spk, g))
    if test_set.lower() not in {r[3].lower() for r in rows}:
        raise PrepError(f"{labels}: no rows with Split_Set {test_set} "
                        f"(found {', '.join(sorted({r[3] for r in rows}))})")
    for lineno, name, cls, split, spk, g in rows:
        part = want.get(split.lower())
        if part is None:
            dropped_split[split] = dropped_split.get(split, 0) + 1
            continue
        if cls not in CLASSES:
            dropped_cls += 1
            continue
        stem = sanitize_id(Path(name).stem)
        if spk is None:
            uid, spk_id, unknown = f"unknown_{stem}", f"unknown_{stem}", True
        else:
            uid, spk_id, unknown = f"{spk}-{stem}", spk, False
            g = g or spk_gender.get(spk)
            if g is None:
                no_gender.append(name)
                continue
        utts.append(Utt(utt=uid, spk=spk_id, path=os.path.abspath((audio / name)), emotion=CLASSES[cls],
                        gender=g, split=part, unknown_spk=unknown))
    log(TOOL, f"{labels}: {len(rows)} rows; left out {dropped_cls} of other classes (U F C O X)"
              + "".join(f", {v} of {k}" for k, v in sorted(dropped_split.items())))
    if no_gender:
        log(TOOL, f"WARNING: left out {len(no_gender)} utterances of known speakers with no gender, "
                  f"e.g. {no_gender[0]}")
    if not utts:
        raise PrepError(f"MSP-Podcast: no utterances of the 5 classes in {labels}")
    return utts


def prepare_msp_podcast(root, data_dir, *, labels=None, test_set: str = "Test1", nj: int = 2) -> Corpus:
    """Write ``data_dir/{all,train,dev,test}``."""
    corpus = Corpus(check_audio(read_msp_podcast(root, labels=labels, test_set=test_set), tool=TOOL, nj=nj),
                    tool=TOOL)
    if len(corpus) == 0:
        raise PrepError(f"MSP-Podcast: none of the audio under {root} is readable")
    subsets = {p: [u.utt for u in corpus.utts.values() if u.split == p] for p in ("train", "dev", "test")}
    for p, ids in subsets.items():
        if not ids:
            raise PrepError(f"MSP-Podcast: the {p} partition is empty")
    corpus.write_protocol(data_dir, subsets)
    return corpus
