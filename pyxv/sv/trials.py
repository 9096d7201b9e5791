"""Who is tried against whom: the trial set of a data dir and Kaldi trials files (paper section 4.2).

Trials by rule: every unordered pair of distinct utterances of the same gender
(``spk2gender``); target iff the speakers match. Utterances of unknown speakers
(data-dir file ``unknown_spk_utts``, or a speaker id starting ``unknown_``),
without an emotion label, without a gender or without an x-vector are left out
and counted. ``iter_trials`` lists those pairs (``local/make_sv_trials.py``);
the scorer (``pyxv.sv.scoring``) applies the rule block by block instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..io import read_table
from ..labels import order_emotions

__all__ = ["TrialSet", "load_trial_set", "trial_set_from_labels", "iter_trials", "read_trials"]


@dataclass
class TrialSet:
    """Utterances that take part in trials, with integer codes.

    utts (N,) ids in C order; spk, gender, emo (N,) int codes into
    ``speakers``, ``genders``, ``emotions``; ``skipped`` counts left-out
    utterances by reason.
    """
    utts: list[str]
    spk: np.ndarray
    gender: np.ndarray
    emo: np.ndarray
    speakers: list[str]
    genders: list[str]
    emotions: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utts)

    def count_trials(self) -> tuple[int, int]:
        """(all trials, target trials) by formula: sum_g n_g (n_g - 1) / 2, sum_s n_s (n_s - 1) / 2."""
        ng = np.bincount(self.gender, minlength=len(self.genders)).astype(np.int64)
        ns = np.bincount(self.spk, minlength=len(self.speakers)).astype(np.int64)
        return int((ng * (ng - 1) // 2).sum()), int((ns * (ns - 1) // 2).sum())


def load_trial_set(data: str | os.PathLike, available=None) -> TrialSet:
    """Read utt2spk, spk2gender, utt2emo (and unknown_spk_utts) of a data dir.

    ``available``: a set of utterance ids that have an x-vector; others are
    skipped and counted as ``no_xvector``.
    """
    data = Path(data)
    for f in ("utt2spk", "utt2emo"):
        if not (data / f).is_file():
            raise FileNotFoundError(f"{data}: has no {f} (needed for SV trials by emotion)")
    utt2spk = read_table(data / "utt2spk")
    utt2emo = read_table(data / "utt2emo")
    unknown = set()
    if (data / "unknown_spk_utts").is_file():
        unknown = {ln.split()[0] for ln in open(data / "unknown_spk_utts", encoding="utf-8") if ln.strip()}
    messages = []
    if (data / "spk2gender").is_file():
        spk2gender = read_table(data / "spk2gender")
    else:
        spk2gender = None
        messages.append(f"{data}: no spk2gender; all utterances treated as one gender (cross-gender trials included)")
    skipped = {"unknown_speaker": 0, "no_emotion": 0, "no_gender": 0, "no_xvector": 0}
    keep = []
    for utt in sorted(utt2spk, key=lambda u: u.encode()):
        spk = utt2spk[utt]
        if utt in unknown or spk.startswith("unknown_"):
            skipped["unknown_speaker"] += 1
        elif not utt2emo.get(utt):
            skipped["no_emotion"] += 1
        elif spk2gender is not None and spk not in spk2gender:
            skipped["no_gender"] += 1
        elif available is not None and utt not in available:
            skipped["no_xvector"] += 1
        else:
            keep.append(utt)
    spks = [utt2spk[u] for u in keep]
    gens = [spk2gender[s].lower() if spk2gender is not None else "all" for s in spks]
    emos = [utt2emo[u].split()[0].lower() for u in keep]
    speakers = sorted(set(spks))
    genders = sorted(set(gens))
    emotions = order_emotions(emos)
    si = {s: i for i, s in enumerate(speakers)}
    gi = {g: i for i, g in enumerate(genders)}
    ei = {e: i for i, e in enumerate(emotions)}
    ts = TrialSet(keep, np.array([si[s] for s in spks], dtype=np.int64),
                  np.array([gi[g] for g in gens], dtype=np.int64),
                  np.array([ei[e] for e in emos], dtype=np.int64),
                  speakers, genders, emotions, {k: v for k, v in skipped.items() if v}, messages)
    for reason, n in ts.skipped.items():
        messages.append(f"{data}: {n} utterance(s) left out of the trials: {reason.replace('_', ' ')}")
    if len(genders) == 1 and spk2gender is not None:
        messages.append(f"{data}: only one gender ({genders[0]}) in the trial set")
    if len(speakers) < 2:
        messages.append(f"{data}: {len(speakers)} speaker(s) in the trial set: there are no nontarget trials, "
                        "EER and minDCF are undefined")
    return ts


def trial_set_from_labels(spk, gender, emo, utts=None) -> TrialSet:
    """A TrialSet from per-utterance label arrays (any hashable labels), rows in the given order."""
    spk, gender, emo = (np.asarray(x) for x in (spk, gender, emo))
    if not (spk.shape == gender.shape == emo.shape) or spk.ndim != 1:
        raise ValueError("spk, gender and emo must be 1-D arrays of the same length")
    speakers, si = np.unique(spk, return_inverse=True)
    genders, gi = np.unique(gender, return_inverse=True)
    emotions = order_emotions(str(e) for e in set(emo.tolist()))
    ei = {e: i for i, e in enumerate(emotions)}
    utts = list(utts) if utts is not None else [str(i) for i in range(spk.size)]
    return TrialSet(utts, si.astype(np.int64), gi.astype(np.int64),
                    np.array([ei[str(e)] for e in emo.tolist()], dtype=np.int64),
                    [str(s) for s in speakers], [str(g) for g in genders], emotions)


def iter_trials(ts: TrialSet) -> Iterator[tuple[int, int, bool]]:
    """(i, j, is_target) for every unordered same-gender pair, i < j in utterance order."""
    for g in range(len(ts.genders)):
        idx = np.flatnonzero(ts.gender == g)
        for k, i in enumerate(idx):
            rest = idx[k + 1:]
            same = ts.spk[rest] == ts.spk[i]
            for j, t in zip(rest.tolist(), same.tolist()):
                yield int(i), j, t


def read_trials(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Kaldi trials ``enroll test target|nontarget`` -> (enroll, test, is_target (T,) bool)."""
    enr, tst, lab = [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            p = line.split()
            if not p:
                continue
            if len(p) != 3 or p[2] not in ("target", "nontarget"):
                raise ValueError(f"{path}:{lineno}: expected 'enroll test target|nontarget', got {line.strip()!r}")
            enr.append(p[0])
            tst.append(p[1])
            lab.append(p[2] == "target")
    return enr, tst, np.array(lab, dtype=bool)
