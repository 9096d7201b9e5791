"""CREMA-D on a generated tree with the real 7442 clip names and the real
VideoDemographics.csv (short generated audio); the committed split."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from pyxv.corpora.check import check_datadir
from pyxv.corpora.common import PrepError
from pyxv.corpora.crema_d import make_split, prepare_crema_d, read_demographics, read_split
from pyxv.io import read_table


@pytest.fixture(scope="module")
def crema_tree(crema_meta, tmp_path_factory):
    root = tmp_path_factory.mktemp("crema") / "CREMA-D"
    wav = root / "AudioWAV"
    wav.mkdir(parents=True)
    shutil.copy(crema_meta / "VideoDemographics.csv", root)
    one = root / "one.wav"   # every clip a link to one 0.2 s file: fast to make
    sf.write(one, (0.01 * np.random.default_rng(0).normal(size=3200)).astype(np.float32), 16000)
    names = (crema_meta / "AudioWAV_filelist.txt").read_text().split()
    assert len(names) == 7442
    for n in names:
        os.symlink(one, wav / n)
    return root


def test_committed_split(repo_root, crema_meta):
    split = read_split(repo_root / "conf/crema_d_split.txt")
    sex = read_demographics(crema_meta / "VideoDemographics.csv")
    assert set(split) == set(sex) and len(split) == 91
    for part, n in (("train", 51), ("dev", 8), ("test", 32)):
        members = [a for a, s in split.items() if s == part]
        assert len(members) == n
        if part != "train":   # balanced by sex
            assert sum(sex[a] == "m" for a in members) == n // 2
    assert split == make_split(sex)   # the file is the documented rule's output


def test_crema_d_prepared(crema_tree, repo_root, tmp_path):
    prepare_crema_d(crema_tree, tmp_path / "crema_d", split_file=repo_root / "conf/crema_d_split.txt")
    d = tmp_path / "crema_d"
    emo = read_table(d / "all/utt2emo")
    assert len(emo) == 4900
    vals = list(emo.values())
    assert vals.count("neutral") == 1087 and all(vals.count(e) == 1271 for e in ("happy", "sad", "angry"))
    g = read_table(d / "all/spk2gender")
    assert len(g) == 91 and list(g.values()).count("m") == 48
    assert g["crema_1001"] == "m" and g["crema_1002"] == "f"
    spk = {p: set(read_table(d / p / "spk2gender")) for p in ("train", "dev", "test")}
    assert [len(spk[p]) for p in ("train", "dev", "test")] == [51, 8, 32]
    assert not (spk["train"] & spk["dev"] or spk["train"] & spk["test"] or spk["dev"] & spk["test"])
    for p in ("all", "train", "dev", "test"):
        assert check_datadir(d / p, emotions=True) == []
    assert "crema_1001-DFA_ANG_XX" in emo and "crema_1001-DFA_DIS_XX" not in emo


def test_crema_d_bad_input(crema_tree, repo_root, tmp_path, capsys):
    split = repo_root / "conf/crema_d_split.txt"
    with pytest.raises(PrepError, match="CREMA-D root"):
        prepare_crema_d(tmp_path / "nope", tmp_path / "o", split_file=split)
    # missing demographics: one error before any work
    root = tmp_path / "c"
    (root / "AudioWAV").mkdir(parents=True)
    with pytest.raises(PrepError, match="demographics file .*does not exist"):
        prepare_crema_d(root, tmp_path / "o", split_file=split)
    # unparsable demographics line names file and line
    (root / "VideoDemographics.csv").write_text('"ActorID","Age","Sex"\n1001,51,"Male"\n1002,21,"Robot"\n')
    with pytest.raises(PrepError, match=r"VideoDemographics.csv:3"):
        prepare_crema_d(root, tmp_path / "o", split_file=split)
    # absent / unreadable / git-lfs-stub audio: reported, counted, skipped
    (root / "VideoDemographics.csv").write_text('"ActorID","Age","Sex"\n1001,51,"Male"\n1002,21,"Female"\n')
    for n in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_DFA_SAD_XX", "1002_TIE_NEU_XX"):
        os.symlink(crema_tree / "one.wav", root / "AudioWAV" / f"{n}.wav")
    (root / "AudioWAV/1001_IEO_SAD_HI.wav").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\n")
    os.symlink(root / "gone.wav", root / "AudioWAV/1002_IEO_ANG_HI.wav")
    c = prepare_crema_d(root, tmp_path / "o", split_file=split)
    err = capsys.readouterr().err
    assert "git-lfs pointer" in err and "1002_IEO_ANG_HI.wav: file does not exist" in err
    assert "skipped 2 of 6" in err and len(c) == 4
    # a split file line that does not parse
    bad = tmp_path / "split.txt"
    bad.write_text("# comment\n1001 train\n1002 holdout\n")
    with pytest.raises(PrepError, match=r"split.txt:3"):
        prepare_crema_d(root, tmp_path / "o", split_file=bad)
