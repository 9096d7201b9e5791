"""Any corpus from a CSV manifest: ``path,speaker,emotion`` plus optional
``utt,gender,split,start,end``.

- ``path``: absolute, or relative to the CSV's folder.
- ``speaker``: any string (made id-safe); utterance ids always start with it.
- ``emotion``: class name (lower-cased); with ``emotions`` given, anything
  outside that set is an error naming the line.
- ``gender``: m/f/male/female (any case); blank = unknown.
- ``split``: train/dev/test (development/validation/valid count as dev).
- ``start``/``end`` (seconds): the row is a segment of the file; the data dir
  gets ``segments`` and one ``wav.scp`` entry per file.

Protocol: with a ``split`` column, ``train``/``dev``/``test`` subsets; without,
``fold1..K/{train,test}`` (plus ``dev`` when ``dev_speakers`` > 0) with
speakers dealt into K gender-balanced folds.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .common import (Corpus, PrepError, Utt, carve_dev, check_audio, log, sanitize_id,
                     speaker_folds, utts_of)

REQUIRED = ("path", "speaker", "emotion")
OPTIONAL = ("utt", "gender", "split", "start", "end")
SPLITS = {"train": "train", "dev": "dev", "development": "dev", "validation": "dev",
          "valid": "dev", "test": "test"}
GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f", "": None, "u": None, "unknown": None}
TOOL = "prepare_manifest"


def read_manifest(csv_path: str | os.PathLike, *, emotions: list[str] | None = None,
                  require_emotion: bool = True) -> list[Utt]:
    """Parse the manifest into :class:`Utt` records (audio not yet checked)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise PrepError(f"manifest {csv_path} does not exist")
    base = Path(os.path.abspath(csv_path)).parent
    allowed = {e.strip().lower() for e in emotions} if emotions else None
    utts: list[Utt] = []
    recs: dict[str, str] = {}       # path -> recording id
    rec_taken: set[str] = set()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise PrepError(f"{csv_path}: empty file (expected a header with {','.join(REQUIRED)})")
        cols = [c.strip().lower() for c in reader.fieldnames]
        reader.fieldnames = cols
        need = REQUIRED if require_emotion else REQUIRED[:2]
        missing = [c for c in need if c not in cols]
        if missing:
            raise PrepError(f"{csv_path}:1: missing required column(s) {', '.join(missing)} "
                            f"(header is: {','.join(cols)}; need {','.join(REQUIRED)} "
                            f"and optionally {','.join(OPTIONAL)})")
        for lineno, row in enumerate(reader, 2):
            if all(not (v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            where = f"{csv_path}:{lineno}"
            if None in row:  # more fields than the header
                raise PrepError(f"{where}: more fields than the header has columns")
            get = lambda c: (row.get(c) or "").strip()
            path, spk_raw = get("path"), get("speaker")
            if not path or not spk_raw:
                raise PrepError(f"{where}: empty path or speaker")
            spk = sanitize_id(spk_raw)
            emo = get("emotion").lower() or None
            if require_emotion and emo is None:
                raise PrepError(f"{where}: empty emotion")
            if allowed is not None and emo is not None and emo not in allowed:
                raise PrepError(f"{where}: emotion '{emo}' is not one of the allowed "
                                f"{','.join(sorted(allowed))}")
            gkey = get("gender").lower()
            if gkey not in GENDERS:
                raise PrepError(f"{where}: gender '{get('gender')}' is not m/f/male/female")
            split = None
            if "split" in cols:
                skey = get("split").lower()
                if skey not in SPLITS:
                    raise PrepError(f"{where}: split '{get('split')}' is not train/dev/test")
                split = SPLITS[skey]
            try:
                start = float(get("start")) if get("start") else None
                end = float(get("end")) if get("end") else None
            except ValueError:
                raise PrepError(f"{where}: start/end '{get('start')}'/'{get('end')}' are not numbers") from None
            if end is not None and start is None:
                start = 0.0
            if start is not None and end is not None and end <= start:
                raise PrepError(f"{where}: end {end} is not after start {start}")
            full = path if os.path.isabs(path) else str(base / path)
            stem = sanitize_id(Path(path).stem)
            if get("utt"):
                utt = sanitize_id(get("utt"))
                # Kaldi's rule: utterance ids start with the speaker id (and a
                # separator, so that speakers stay contiguous when sorted).
                if not (utt == spk or utt.startswith(spk + "-") or utt.startswith(spk + "_")):
                    utt = f"{spk}-{utt}"
            else:
                utt = f"{spk}-{stem}"
                if start is not None:
                    utt += f"-{int(round(start * 100)):07d}"
            rec = None
            if start is not None or "start" in cols:
                rec = recs.get(full)
                if rec is None:
                    rec, n = stem, 1
                    while rec in rec_taken:
                        n += 1
                        rec = f"{stem}_{n}"
                    rec_taken.add(rec)
                    recs[full] = rec
            utts.append(Utt(utt=utt, spk=spk, path=full, emotion=emo, gender=GENDERS[gkey],
                            start=start, end=end, rec=rec, split=split))
    if not utts:
        raise PrepError(f"{csv_path}: no rows")
    seen: dict[str, int] = {}
    for u in utts:
        seen[u.utt] = seen.get(u.utt, 0) + 1
    dups = [k for k, v in seen.items() if v > 1]
    if dups:
        raise PrepError(f"{csv_path}: duplicate utterance ids, e.g. {dups[0]} "
                        f"(give a unique 'utt' column)")
    return utts


def prepare_manifest(csv_path, data_dir, *, emotions=None, folds: int = 5, dev_speakers: int = 0,
                     seed: int = 0, nj: int = 2, protocol: bool = True, subset_name: str = "all",
                     require_emotion: bool = True) -> Corpus:
    """Prepare ``data_dir/<subset_name>`` and (``protocol``) the split or folds."""
    utts = read_manifest(csv_path, emotions=emotions, require_emotion=require_emotion)
    log(TOOL, f"{csv_path}: {len(utts)} rows")
    # Empty start/end on some rows of a segmented manifest: whole file.
    if any(u.start is not None for u in utts):
        for u in utts:
            if u.start is None:
                u.start = 0.0
    corpus = Corpus(check_audio(utts, tool=TOOL, nj=nj), tool=TOOL)
    if len(corpus) == 0:
        raise PrepError(f"{csv_path}: no usable audio")
    data_dir = Path(data_dir)
    if not protocol:
        corpus.write(data_dir / subset_name)
        log(TOOL, f"{data_dir}/{subset_name}: {corpus.summary()}")
        return corpus
    has_split = any(u.split for u in corpus.utts.values())
    if has_split:
        missing = [u.utt for u in corpus.utts.values() if not u.split]
        if missing:
            raise PrepError(f"{csv_path}: the split column is empty for {len(missing)} rows, e.g. {missing[0]}")
        # A speaker in two splits would leak speaker identity across train/test.
        spk_split: dict[str, set] = {}
        for u in corpus.utts.values():
            spk_split.setdefault(u.spk, set()).add(u.split)
        mixed = [s for s, v in spk_split.items() if len(v) > 1]
        if mixed:
            log(TOOL, f"WARNING: {len(mixed)} speakers appear in more than one split (e.g. {mixed[0]}): "
                      "the split is not speaker-independent")
        subsets = {name: [u.utt for u in corpus.utts.values() if u.split == name]
                   for name in ("train", "dev", "test")}
        subsets = {k: v for k, v in subsets.items() if v}
    else:
        spk2g = {s: corpus.spk2gender.get(s) for s in corpus.speakers}
        subsets = {}
        for k, test_spks in enumerate(speaker_folds(spk2g, folds, seed), 1):
            rest = {s: g for s, g in spk2g.items() if s not in set(test_spks)}
            dev = carve_dev(rest, dev_speakers, seed + k) if dev_speakers > 0 else []
            train = [s for s in rest if s not in set(dev)]
            subsets[f"fold{k}/train"] = utts_of(corpus, train)
            if dev:
                subsets[f"fold{k}/dev"] = utts_of(corpus, dev)
            subsets[f"fold{k}/test"] = utts_of(corpus, test_spks)
    corpus.write_protocol(data_dir, subsets)
    return corpus
