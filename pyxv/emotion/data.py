"""Emotion protocol discovery and training-set assembly.

Layout (see the common contract): ``<emo>/all`` (every utterance), ``<emo>/all_aug``
(augmented copies with ``utt2orig``), and the protocol as ``<emo>/fold<k>/{train,dev,test}``
(dev optional) or ``<emo>/{train,dev,test}`` (one fixed split, named ``split``).

Clean+aug training adds, for each fold, the ``all_aug`` utterances whose ``utt2orig``
source is in that fold's *training* set -- never copies of dev or test utterances.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..datadir import DataDir
from ..io import read_table
from .spec import data_tag

log = logging.getLogger("pyxv.emotion")


@dataclass
class Split:
    """One train/(dev)/test partition of the protocol; ``name`` is 'fold<k>' or 'split'."""
    name: str
    train: Path
    test: Path
    dev: Path | None = None


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def discover_protocol(emo_dir: str | Path) -> list[Split]:
    """Folds ``fold*/`` in natural order (fold2 before fold10), else the corpus dir itself.

    Raises FileNotFoundError naming what is missing.
    """
    emo_dir = Path(emo_dir)
    if not emo_dir.is_dir():
        raise FileNotFoundError(f"emotion data dir {emo_dir} does not exist")
    folds = sorted((p for p in emo_dir.glob("fold*") if p.is_dir()), key=_natural_key)
    cands = [(p.name, p) for p in folds] if folds else [("split", emo_dir)]
    out = []
    for name, d in cands:
        for sub in ("train", "test"):
            if not (d / sub / "utt2spk").is_file():
                raise FileNotFoundError(f"protocol {name}: {d / sub} is not a data dir (no utt2spk); "
                                        f"expected {emo_dir}/fold<k>/{{train,dev,test}} or {emo_dir}/{{train,dev,test}}")
        dev = d / "dev" if (d / "dev" / "utt2spk").is_file() else None
        out.append(Split(name, d / "train", d / "test", dev))
    return out


@dataclass
class LabeledSet:
    """Utterances with labels and speakers; ``orig`` is the clean source of each utt
    (itself for clean utts), ``aug`` marks augmented copies. Lists are parallel."""
    utts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    spks: list[str] = field(default_factory=list)
    orig: list[str] = field(default_factory=list)
    aug: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utts)

    def add(self, utt, label, spk, orig=None, aug=False):
        self.utts.append(utt)
        self.labels.append(label)
        self.spks.append(spk)
        self.orig.append(orig or utt)
        self.aug.append(aug)

    @property
    def speakers(self) -> set[str]:
        return set(self.spks)

    def subset(self, idx) -> "LabeledSet":
        """The entries at positions ``idx``, in that order."""
        out = LabeledSet()
        for i in idx:
            out.add(self.utts[i], self.labels[i], self.spks[i], self.orig[i], self.aug[i])
        return out


def labeled_set(data: str | Path) -> LabeledSet:
    """Clean utterances of a data dir with utt2emo labels (utts without a label are an error)."""
    d = DataDir(data)
    if not d.has("utt2emo"):
        raise FileNotFoundError(f"{d.path}: has no utt2emo (emotion labels)")
    u2e = d.utt2emo
    missing = [u for u in d.utts if u not in u2e]
    if missing:
        raise ValueError(f"{d.path}/utt2emo: no label for {len(missing)} utterance(s), e.g. {missing[:3]}")
    s = LabeledSet()
    for utt, spk in d.utt2spk.items():
        s.add(utt, u2e[utt], spk)
    return s


def training_set(split: Split, train_data: str, aug_dir: str | Path | None) -> LabeledSet:
    """The fold's training utterances; with 'clean+aug' also their augmented copies.

    Augmented copies come from ``aug_dir`` (``<emo>/all_aug``) through its ``utt2orig``;
    a copy is taken only when its source is in the fold's train set. Copies keep
    their source's speaker (so speaker-grouped CV keeps them together) and label.
    """
    data_tag(train_data)
    s = labeled_set(split.train)
    if train_data == "clean":
        return s
    return _with_aug_copies(s, aug_dir, split.name)


def _with_aug_copies(s: LabeledSet, aug_dir: str | Path | None, what: str) -> LabeledSet:
    """``s`` plus the copies in ``aug_dir`` whose ``utt2orig`` source is in ``s``."""
    if aug_dir is None or not (Path(aug_dir) / "utt2orig").is_file():
        raise FileNotFoundError(f"--train-data clean+aug needs augmented copies with utt2orig in {aug_dir}")
    src = {u: (lab, spk) for u, lab, spk in zip(s.utts, s.labels, s.spks)}
    u2o = read_table(Path(aug_dir) / "utt2orig")
    n = 0
    for utt, orig in u2o.items():
        if orig in src:
            lab, spk = src[orig]
            s.add(utt, lab, spk, orig=orig, aug=True)
            n += 1
    if n == 0:
        log.warning("%s: no augmented copy in %s has its source in the training set; training on clean only",
                    what, aug_dir)
    return s


def final_training_set(splits: list[Split], train_data: str, aug_dir: str | Path | None) -> tuple[LabeledSet, str]:
    """The training set of a system's final model and a phrase saying what it is.

    With folds: every labelled utterance of the protocol (the union of the folds'
    train, dev and test sets). With one fixed split (``split``, e.g. MSP-Podcast):
    train + dev; its test set stays unseen. 'clean+aug' adds the copies of those
    utterances, as for a fold.
    """
    data_tag(train_data)
    fixed = len(splits) == 1 and splits[0].name == "split"
    dirs = [d for sp in splits for d in ((sp.train, sp.dev) if fixed else (sp.train, sp.dev, sp.test))
            if d is not None]
    s, seen = LabeledSet(), set()
    for d in dirs:
        part = labeled_set(d)
        for u, lab, spk in zip(part.utts, part.labels, part.spks):
            if u not in seen:
                seen.add(u)
                s.add(u, lab, spk)
    what = ("train + dev of the fixed split" if fixed else
            f"every labelled utterance of the {len(splits)} folds (their train, dev and test sets)")
    if train_data != "clean":
        s = _with_aug_copies(s, aug_dir, "final")
    return s, what


def corpus_classes(emo_dir: str | Path, splits: list[Split], classes: list[str] | None = None) -> list[str]:
    """The model's class list: ``classes`` when configured, else the sorted labels of
    ``<emo>/all/utt2emo`` (or of the protocol's subsets when there is no all/)."""
    if classes:
        return list(classes)
    all_emo = Path(emo_dir) / "all" / "utt2emo"
    labs: set[str] = set()
    if all_emo.is_file():
        labs = set(read_table(all_emo).values())
    else:
        for sp in splits:
            for d in (sp.train, sp.dev, sp.test):
                if d is not None and (d / "utt2emo").is_file():
                    labs |= set(read_table(d / "utt2emo").values())
    if not labs:
        raise ValueError(f"{emo_dir}: no emotion labels found")
    return sorted(labs)


def check_classes(split_name: str, train: LabeledSet, classes: list[str]) -> list[str]:
    """Warn (naming fold and class) for classes with no training utterance; error for
    training labels outside ``classes``. Returns the missing classes."""
    unknown = sorted(set(train.labels) - set(classes))
    if unknown:
        raise ValueError(f"{split_name}: training labels {unknown} are not among the model's classes {classes}")
    missing = [c for c in classes if c not in set(train.labels)]
    for c in missing:
        log.warning("WARNING: %s: class '%s' has no training utterance; the model cannot predict it "
                    "(metrics are computed over the labels present)", split_name, c)
    return missing


def check_test_labels(split_name: str, labels, classes: list[str], what: str = "test") -> None:
    """Error naming the labels of a test (or dev) set that the model does not know."""
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"{split_name}: {what} labels {unknown} are unknown to the model "
                         f"(its classes: {classes})")


def assert_speaker_independent(split_name: str, train: LabeledSet, test: LabeledSet,
                               dev: LabeledSet | None = None) -> None:
    """Raise if a test speaker appears in training (or dev) data, or a test utterance
    (or its augmented copy) is in training."""
    unknown_spk = [s for s in test.speakers if s.startswith("unknown_")]
    shared = (train.speakers & test.speakers) - set(unknown_spk)
    if shared:
        raise AssertionError(f"{split_name}: test speakers {sorted(shared)[:5]} also appear in training")
    if dev is not None:
        shared = (dev.speakers & test.speakers) - set(unknown_spk)
        if shared:
            raise AssertionError(f"{split_name}: test speakers {sorted(shared)[:5]} also appear in dev")
    leak = set(train.orig) & set(test.utts)
    if leak:
        raise AssertionError(f"{split_name}: test utterances {sorted(leak)[:5]} (or copies) are in training")
