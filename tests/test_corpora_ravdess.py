"""RAVDESS on the real clips (../shared/corpora/ravdess), and bad input."""
from __future__ import annotations

import os
import subprocess

import pytest

from pyxv.corpora.check import check_datadir
from pyxv.corpora.common import PrepError
from pyxv.corpora.ravdess import prepare_ravdess
from pyxv.io import read_table


def test_real_ravdess_counts_and_folds(ravdess_root, tmp_path):
    c = prepare_ravdess(ravdess_root, tmp_path / "ravdess")
    d = tmp_path / "ravdess"
    emo = read_table(d / "all/utt2emo")
    assert len(emo) == 672
    assert sorted(emo.values()).count("neutral") == 96
    for e in ("happy", "sad", "angry"):
        assert list(emo.values()).count(e) == 192
    g = read_table(d / "all/spk2gender")
    assert len(g) == 24 and list(g.values()).count("m") == 12
    assert g["ravdess_a01"] == "m" and g["ravdess_a02"] == "f"
    assert not any("-02-" == u[len("ravdess_a01-03-01"):][:4] for u in emo)   # calm left out
    for k in range(1, 7):
        test = set(read_table(d / f"fold{k}/test/spk2gender"))
        train = set(read_table(d / f"fold{k}/train/spk2gender"))
        assert test == {f"ravdess_a{a:02d}" for a in range(4 * k - 3, 4 * k + 1)}
        assert train == set(g) - test
        assert len(read_table(d / f"fold{k}/test/utt2spk")) == 112
        assert check_datadir(d / f"fold{k}/test", emotions=True) == []
    assert check_datadir(d / "all", emotions=True) == []
    assert not list(d.glob("fold*/dev"))
    # utt2dur from the headers (the clips are 3-5 s)
    dur = [float(v) for v in read_table(d / "all/utt2dur").values()]
    assert 2.5 < min(dur) and max(dur) < 6.0
    assert len(c.speakers) == 24


def test_ravdess_wav_and_bad_files(ravdess_root, tmp_path, capsys):
    """.wav and .flac, a broken file and an odd name: reported, counted, skipped."""
    import soundfile as sf

    root = tmp_path / "rav"
    for actor in (1, 2, 5):
        a = root / f"Actor_{actor:02d}"
        a.mkdir(parents=True)
        for src in sorted((ravdess_root / f"Actor_{actor:02d}").glob("*-01-01-01-01-*")):
            os.symlink(src, a / src.name)
    # one clip as .wav instead of .flac
    src = ravdess_root / "Actor_05/03-01-05-02-02-02-05.flac"
    x, sr = sf.read(src)
    sf.write(root / "Actor_05/03-01-05-02-02-02-05.wav", x, sr)
    (root / "Actor_02/03-01-04-01-01-01-02.wav").write_bytes(b"RIFF not really audio")
    (root / "Actor_02/03-01-04-01-01-02-02.wav").write_bytes(b"")
    (root / "Actor_02/readme-3-1.wav").write_bytes(b"x")
    c = prepare_ravdess(root, tmp_path / "out")
    err = capsys.readouterr().err
    assert "03-01-04-01-01-01-02.wav" in err and "skipped 2 of" in err
    assert "readme-3-1.wav" in err
    assert "ravdess_a05-03-01-05-02-02-02-05" in c.utts
    folds = sorted(p.parent.name for p in (tmp_path / "out").glob("fold*/test"))
    assert folds == ["fold1", "fold2"]       # actors 1,2 -> fold1; 5 -> fold2
    assert check_datadir(tmp_path / "out/fold2/train") == []


def test_missing_root_is_one_clear_error(tmp_path, repo_root):
    with pytest.raises(PrepError, match="does not exist"):
        prepare_ravdess(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepError, match="no Actor_NN"):
        prepare_ravdess(tmp_path / "empty", tmp_path / "out")
    r = subprocess.run([str(repo_root / "local/prepare_ravdess.py"), str(tmp_path / "nope"), str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "ERROR: RAVDESS root" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
