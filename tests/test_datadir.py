"""Data-dir tools (utils/*.sh over pyxv.datadir) on hand-made good and broken dirs."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pyxv import datadir as dd

REPO = Path(__file__).resolve().parents[1]


def tool(name, *args, cwd=None):
    return subprocess.run([str(REPO / name), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def make_dir(root: Path, name="good", spk=("s1", "s2", "s3"), per=3, feats=True, emo=True) -> Path:
    """A small valid data dir: real wav files, MFCC-shaped feats, VAD vectors."""
    d = root / name
    d.mkdir(parents=True)
    wavdir = root / "wav"
    wavdir.mkdir(exist_ok=True)
    utt2spk = {}
    for s in spk:
        for i in range(per):
            utt2spk[f"{s}-u{i}"] = s
    utts = sorted(utt2spk)
    for u in utts:
        sf.write(wavdir / f"{u}.wav", np.zeros(800, np.float32), 16000)
    (d / "wav.scp").write_text("".join(f"{u} {wavdir}/{u}.wav\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u} {utt2spk[u]}\n" for u in utts))
    spk2utt = dd.utt2spk_to_spk2utt(utt2spk)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(v)}\n" for s, v in spk2utt.items()))
    (d / "spk2gender").write_text("".join(f"{s} {'mf'[k % 2]}\n" for k, s in enumerate(sorted(spk))))
    if emo:
        emos = ["neutral", "happy", "sad", "angry", "disgust"]
        (d / "utt2emo").write_text("".join(f"{u} {emos[k % 5]}\n" for k, u in enumerate(utts)))
    if feats:
        n = {u: 20 + k for k, u in enumerate(utts)}
        kaldiio.save_ark(str(d / "feats.ark"), {u: np.random.rand(n[u], 23).astype(np.float32) for u in utts},
                         scp=str(d / "feats.scp"))
        kaldiio.save_ark(str(d / "vad.ark"), {u: np.ones(n[u], np.float32) for u in utts}, scp=str(d / "vad.scp"))
        (d / "utt2num_frames").write_text("".join(f"{u} {n[u]}\n" for u in utts))
    return d


def utts_of(d: Path) -> list[str]:
    return [ln.split()[0] for ln in (d / "utt2spk").read_text().splitlines()]


# ---------------------------------------------------------------------- split
def test_split_by_utterance_and_per_speaker(tmp_path):
    d = make_dir(tmp_path, spk=("s1", "s2", "s3", "s4"), per=3)
    p = tool("utils/split_data.sh", d, 5)
    assert p.returncode == 0, p.stderr
    sizes = [len(utts_of(d / "split5" / str(i))) for i in range(1, 6)]
    assert sizes == [3, 3, 2, 2, 2]
    assert sum((utts_of(d / "split5" / str(i)) for i in range(1, 6)), []) == utts_of(d)
    for i in range(1, 6):
        part = d / "split5" / str(i)
        assert dd.validate_datadir(part) == [], i
        assert set(dd.read_table(part / "feats.scp")) == set(utts_of(part))
    # Reused when up to date: nothing rewritten.
    t = (d / "split5/1/utt2spk").stat().st_mtime_ns
    p = tool("utils/split_data.sh", d, 5)
    assert p.returncode == 0 and p.stderr == ""
    assert (d / "split5/1/utt2spk").stat().st_mtime_ns == t
    # Per speaker: no speaker straddles two parts.
    p = tool("utils/split_data.sh", "--per-spk", d, 3)
    assert p.returncode == 0, p.stderr
    spk_sets = [set(dd.read_table(d / "split3" / str(i) / "utt2spk").values()) for i in range(1, 4)]
    assert sum(len(s) for s in spk_sets) == 4 and set().union(*spk_sets) == {"s1", "s2", "s3", "s4"}
    assert all(s for s in spk_sets)
    # A changed source is re-split.
    os.utime(d / "utt2emo")
    (d / "utt2emo").write_text((d / "utt2emo").read_text().replace("neutral", "sad"))
    p = tool("utils/split_data.sh", "--per-spk", d, 3)
    assert "split" in p.stderr
    assert "neutral" not in (d / "split3/1/utt2emo").read_text()


def test_split_too_many_parts_is_a_clear_error(tmp_path):
    d = make_dir(tmp_path, spk=("s1", "s2"), per=1, feats=False)
    p = tool("utils/split_data.sh", d, 3)
    assert p.returncode == 1 and "cannot split 2 utterances into 3 parts" in p.stderr
    p = tool("utils/split_data.sh", "--per-spk", d, 3)
    assert p.returncode == 1 and "cannot split 2 speakers" in p.stderr
