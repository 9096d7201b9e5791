"""MSP-Podcast on a generated CSV: every EmoClass, Development and Validation,
Test1/Test2, Unknown speakers (pseudo-speakers listed in unknown_spk_utts)."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import soundfile as sf

from pyxv.corpora.check import check_datadir
from pyxv.corpora.common import PrepError
from pyxv.corpora.msp_podcast import prepare_msp_podcast
from pyxv.io import read_table

COLS = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]


def make_tree(root, tiny, rows):
    (root / "Audios").mkdir(parents=True, exist_ok=True)
    (root / "Labels").mkdir(exist_ok=True)
    with open(root / "Labels/labels_concensus.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLS)
        for r in rows:
            w.writerow(r)
            if not (root / "Audios" / r[0]).exists():
                os.symlink(tiny, root / "Audios" / r[0])
    return root


def rows():
    out, i = [], 0
    splits = ["Train", "Train", "Development", "Validation", "Test1", "Test2"]
    for k, cls in enumerate("ASHUFDCNOX"):
        for j, split in enumerate(splits):
            i += 1
            spk = "Unknown" if (i % 7 == 0) else str(1 + (i % 5) + 10 * (split.startswith("Test")))
            gender = "Unknown" if spk == "Unknown" and i % 2 else ("Male" if int(spk if spk != "Unknown" else 0) % 2 else "Female")
            out.append([f"MSP-PODCAST_{i:04d}_{j:04d}.wav", cls, "3.0", "4.0", "3.5", spk, gender, split])
    return out


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.wav"
    sf.write(p, np.zeros(8000, np.float32), 16000)
    return p


def test_msp_podcast(tmp_path, tiny):
    rs = rows()
    root = make_tree(tmp_path / "MSP-PODCAST", tiny, rs)
    prepare_msp_podcast(root, tmp_path / "msp")
    d = tmp_path / "msp"
    emo = read_table(d / "all/utt2emo")
    kept = [r for r in rs if r[1] in "ASHND" and r[7] != "Test2"]
    assert len(emo) == len(kept) == 5 * 5
    assert sorted(set(emo.values())) == ["angry", "disgust", "happy", "neutral", "sad"]
    n = {p: len(read_table(d / p / "utt2spk")) for p in ("train", "dev", "test")}
    assert n == {"train": 10, "dev": 10, "test": 5}          # Development + Validation -> dev
    utt2spk = read_table(d / "all/utt2spk")
    unk = (d / "all/unknown_spk_utts").read_text().split()
    n_unknown = sum(r[5] == "Unknown" for r in kept)
    assert len(unk) == n_unknown > 0
    for u in unk:
        assert utt2spk[u] == u and u.startswith("unknown_MSP-PODCAST_")
    known = [u for u in utt2spk if u not in unk]
    assert all(utt2spk[u].startswith("msp_00") and u.startswith(utt2spk[u] + "-") for u in known)
    g = read_table(d / "all/spk2gender")
    assert g["msp_0003"] == "m" and g["msp_0002"] == "f"
    for p in ("all", "train", "dev", "test"):
        assert check_datadir(d / p, emotions=True) == []
    # the test set is an option
    prepare_msp_podcast(root, tmp_path / "msp2", test_set="Test2")
    assert len(read_table(tmp_path / "msp2/test/utt2spk")) == 5
    assert not set(read_table(tmp_path / "msp2/test/utt2spk")) & set(read_table(d / "test/utt2spk"))


def test_msp_podcast_bad_input(tmp_path, tiny, capsys):
    with pytest.raises(PrepError, match="MSP-Podcast root"):
        prepare_msp_podcast(tmp_path / "nope", tmp_path / "o")
    root = tmp_path / "m"
    (root / "Audios").mkdir(parents=True)
    (root / "Labels").mkdir()
    (root / "Labels/labels.txt").write_text("MSP-PODCAST_0001_0001.wav; A; A:3.0; V:4.0; D:3.5;\n")
    with pytest.raises(PrepError, match="labels_concensus.csv with columns.*--labels"):
        prepare_msp_podcast(root, tmp_path / "o")
    rs = rows()
    make_tree(root, tiny, rs)
    os.unlink(root / "Audios" / rs[0][0])                      # absent audio
    prepare_msp_podcast(root, tmp_path / "o")
    err = capsys.readouterr().err
    assert rs[0][0] in err and "skipped 1 of 25" in err
    lab = root / "Labels/labels_concensus.csv"
    lines = lab.read_text().splitlines()
    lines[3] = lines[3].replace(",A,", ",Q,")
    lab.write_text("\n".join(lines) + "\n")
    with pytest.raises(PrepError, match=r"labels_concensus.csv:4: cannot parse"):
        prepare_msp_podcast(root, tmp_path / "o")
    lab.write_text("FileName,EmoClass,SpkrID\nMSP-PODCAST_0001_0001.wav,A,1\n")
    with pytest.raises(PrepError, match=r"labels_concensus.csv:1: missing column\(s\) Gender, Split_Set"):
        prepare_msp_podcast(root, tmp_path / "o")
