"""Helpers for emotion-corpus fixtures shared by the emotion tests."""
from __future__ import annotations

from pathlib import Path


def labelled_speakers(n_folds: int, spk_per_fold: int, utts_per_class: int, classes) -> tuple[list, dict, dict]:
    """Speakers ``s<fold><j>`` with ``utts_per_class`` utterances ``<spk>-<class>-<r>`` of each class:
    (speakers, utt2spk, utt2emo)."""
    spks = [f"s{k}{j}" for k in range(1, n_folds + 1) for j in range(spk_per_fold)]
    u2s, u2e = {}, {}
    for s in spks:
        for c in classes:
            for r in range(utts_per_class):
                u = f"{s}-{c}-{r}"
                u2s[u], u2e[u] = s, c
    return spks, u2s, u2e


def write_folds(emo_dir: Path, u2s: dict, u2e: dict, test_speakers, wav: dict | None = None) -> None:
    """fold<k>/{train,test} data dirs: fold k tests the speakers of ``test_speakers[k-1]`` and
    trains on the others; ``wav`` gives wav.scp entries (default /dev/null: features only)."""
    from pyxv.datadir import write_datadir

    for k, test_spk in enumerate(test_speakers, 1):
        for name in ("train", "test"):
            us = {u: s for u, s in u2s.items() if (s in test_spk) == (name == "test")}
            write_datadir(Path(emo_dir) / f"fold{k}" / name, utt2spk=us,
                          wav_scp={u: wav[u] if wav else "/dev/null" for u in us}, utt2emo={u: u2e[u] for u in us})


def write_ravdess_folds(emo_dir: Path, u2s: dict, wav: dict, u2e: dict) -> None:
    """RAVDESS's protocol over speakers ``aNN``: fold<k>/{train,test}, fold k tests actors 4k-3..4k."""
    write_folds(emo_dir, u2s, u2e, [{f"a{a:02d}" for a in range(4 * k - 3, 4 * k + 1)} for k in range(1, 7)], wav)
