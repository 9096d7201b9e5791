"""CREMA-D: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` and
``VideoDemographics.csv`` ("ActorID","Age","Sex","Race","Ethnicity").

4 classes: ANG angry, HAP happy, SAD sad, NEU neutral (DIS, FEA left out):
4900 of the 7442 clips, 91 actors. Ids: speaker ``crema_<actor>``, utterance
``crema_<actor>-<sentence>_<emotion>_<level>``.

Protocol: a fixed 51/8/32-actor train/dev/test split, balanced by sex,
read from a committed file (``conf/crema_d_split.txt``, lines ``<actor> <set>``)
made once by :func:`make_split` from the real demographics:

  within each sex, actors are ordered by sha1("pyxv-crema-d:" + ActorID);
  the first 16 are test, the next 4 dev, the rest train
  (48 male, 43 female -> train 28 m + 23 f, dev 4 + 4, test 16 + 16).

Regenerate: ``python -m pyxv.corpora.crema_d <VideoDemographics.csv> conf/crema_d_split.txt``.
"""
from __future__ import annotations

import csv
import os
import hashlib
import re
import sys
from pathlib import Path

from .common import Corpus, PrepError, Utt, check_audio, log, require_dir, require_file

TOOL = "prepare_crema_d"
EMOTIONS = {"ANG": "angry", "HAP": "happy", "SAD": "sad", "NEU": "neutral"}
ALL_EMOTIONS = {"ANG", "HAP", "SAD", "NEU", "DIS", "FEA"}
SENTENCES = {"IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"}
LEVELS = {"LO", "MD", "HI", "XX"}
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
SEXES = {"male": "m", "female": "f"}
SPLIT_SIZES = {"test": 16, "dev": 4}   # per sex; the rest is train


def spk_id(actor: str) -> str:
    return f"crema_{actor}"


def read_demographics(path) -> dict[str, str]:
    """ActorID -> m/f from VideoDemographics.csv; errors name file and line."""
    path = require_file(path, "CREMA-D demographics file")
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "ActorID" not in reader.fieldnames or "Sex" not in reader.fieldnames:
            raise PrepError(f"{path}:1: expected columns \"ActorID\",...,\"Sex\", got {reader.fieldnames}")
        for lineno, row in enumerate(reader, 2):
            actor = (row.get("ActorID") or "").strip()
            sex = (row.get("Sex") or "").strip().lower()
            if not re.fullmatch(r"\d{4}", actor) or sex not in SEXES:
                raise PrepError(f"{path}:{lineno}: cannot parse actor/sex from {row}")
            out[actor] = SEXES[sex]
    if not out:
        raise PrepError(f"{path}: no actors")
    return out


def make_split(actor2sex: dict[str, str]) -> dict[str, str]:
    """The documented deterministic rule (module docstring): actor -> set."""
    split = {}
    for sex in ("m", "f"):
        actors = sorted((a for a, s in actor2sex.items() if s == sex),
                        key=lambda a: hashlib.sha1(f"pyxv-crema-d:{a}".encode()).hexdigest())
        n_te, n_dev = SPLIT_SIZES["test"], SPLIT_SIZES["dev"]
        for i, a in enumerate(actors):
            split[a] = "test" if i < n_te else "dev" if i < n_te + n_dev else "train"
    return split


def write_split(split: dict[str, str], path) -> None:
    from ..io import atomic_open

    with atomic_open(path) as f:
        f.write("# CREMA-D actor split used by pyxv (local/prepare_crema_d.py): <ActorID> <train|dev|test>.\n"
                "# 51 train / 8 dev / 32 test actors, balanced by sex. Made once from VideoDemographics.csv\n"
                "# by pyxv.corpora.crema_d.make_split: within each sex, actors ordered by\n"
                "# sha1('pyxv-crema-d:' + ActorID); first 16 test, next 4 dev, rest train.\n")
        for a in sorted(split):
            f.write(f"{a} {split[a]}\n")


def read_split(path) -> dict[str, str]:
    path = require_file(path, "CREMA-D split file")
    out = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        f = line.split()
        if len(f) != 2 or f[1] not in ("train", "dev", "test") or not re.fullmatch(r"\d{4}", f[0]):
            raise PrepError(f"{path}:{lineno}: expected '<ActorID> train|dev|test', got '{line}'")
        if f[0] in out:
            raise PrepError(f"{path}:{lineno}: actor {f[0]} listed twice")
        out[f[0]] = f[1]
    return out


def read_crema_d(root, demographics=None) -> tuple[list[Utt], dict[str, str]]:
    root = require_dir(root, "CREMA-D root")
    demo_path = Path(demographics) if demographics else root / "VideoDemographics.csv"
    actor2sex = read_demographics(demo_path)
    wav_dir = require_dir(root / "AudioWAV", "CREMA-D audio folder")
    utts, odd, no_sex = [], [], []
    for f in sorted(wav_dir.iterdir()):
        if f.suffix.lower() != ".wav":
            continue
        m = NAME.match(f.stem)
        if not m or m.group(2) not in SENTENCES or m.group(3) not in ALL_EMOTIONS or m.group(4) not in LEVELS:
            odd.append(f)
            continue
        actor, sent, emo, level = m.groups()
        if emo not in EMOTIONS:
            continue
        if actor not in actor2sex:
            no_sex.append(f)
            continue
        utts.append(Utt(utt=f"{spk_id(actor)}-{sent}_{emo}_{level}", spk=spk_id(actor),
                        path=os.path.abspath(f), emotion=EMOTIONS[emo], gender=actor2sex[actor]))
    for f in odd[:10]:
        log(TOOL, f"WARNING: skipping {f}: name is not <actor>_<sentence>_<emotion>_<level>")
    if odd:
        log(TOOL, f"WARNING: skipped {len(odd)} files with unexpected names")
    if no_sex:
        log(TOOL, f"WARNING: skipped {len(no_sex)} files of actors not in {demo_path}, e.g. {no_sex[0]}")
    if not utts:
        raise PrepError(f"CREMA-D: no clips of the 4 classes in {wav_dir}")
    return utts, actor2sex


def prepare_crema_d(root, data_dir, *, split_file, demographics=None, nj: int = 2) -> Corpus:
    """Write ``data_dir/all`` and ``data_dir/{train,dev,test}`` from the split file."""
    split = read_split(split_file)
    utts, _ = read_crema_d(root, demographics)
    unlisted = sorted({u.spk for u in utts if u.spk[len("crema_"):] not in split})
    if unlisted:
        raise PrepError(f"{split_file}: actors {' '.join(unlisted[:5])} are not in the split")
    corpus = Corpus(check_audio(utts, tool=TOOL, nj=nj), tool=TOOL)
    if len(corpus) == 0:
        raise PrepError(f"CREMA-D: none of the audio in {root}/AudioWAV is readable")
    subsets = {name: [u.utt for u in corpus.utts.values() if split[u.spk[len("crema_"):]] == name]
               for name in ("train", "dev", "test")}
    corpus.write_protocol(data_dir, subsets)
    return corpus


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m pyxv.corpora.crema_d <VideoDemographics.csv> <split-file-out>")
    s = make_split(read_demographics(sys.argv[1]))
    write_split(s, sys.argv[2])
    print({k: sum(v == k for v in s.values()) for k in ("train", "dev", "test")})
