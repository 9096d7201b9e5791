"""Any corpus from a CSV manifest: with and without split, with segments, bad input."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from pyxv.corpora.check import check_datadir
from pyxv.corpora.common import PrepError
from pyxv.corpora.manifest import prepare_manifest
from pyxv.io import read_table

EMOS = ["neutral", "happy", "sad", "angry"]


@pytest.fixture
def audio(tmp_path):
    """12 speakers (6 f) x 4 emotions, one 0.5 s file each, plus a 3 s 'session' file."""
    d = tmp_path / "audio"
    d.mkdir()
    rng = np.random.default_rng(0)
    for s in range(12):
        for e in EMOS:
            sf.write(d / f"s{s:02d}_{e}.wav", 0.01 * rng.normal(size=8000).astype(np.float32), 16000)
    sf.write(d / "session.wav", np.zeros(48000, np.float32), 16000)
    return d


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_manifest_without_split_makes_speaker_folds(audio, tmp_path):
    rows = [(f"audio/s{s:02d}_{e}.wav", f"spk{s:02d}", e.upper(), "f" if s % 2 else "Male")
            for s in range(12) for e in EMOS]
    csvp = write_csv(tmp_path / "m.csv", ["path", "speaker", "emotion", "gender"], rows)
    prepare_manifest(csvp, tmp_path / "mycorpus", folds=4, dev_speakers=2, emotions=EMOS)
    d = tmp_path / "mycorpus"
    assert len(read_table(d / "all/utt2emo")) == 48
    assert set(read_table(d / "all/utt2emo").values()) == set(EMOS)     # lower-cased
    tests = []
    for k in range(1, 5):
        spk = {p: set(read_table(d / f"fold{k}/{p}/spk2gender")) for p in ("train", "dev", "test")}
        assert len(spk["test"]) == 3 and len(spk["dev"]) == 2 and len(spk["train"]) == 7
        assert not (spk["test"] & spk["train"] or spk["dev"] & spk["train"] or spk["dev"] & spk["test"])
        g = read_table(d / f"fold{k}/test/spk2gender")
        assert set(g.values()) == {"m", "f"}           # gender-balanced folds
        tests.append(spk["test"])
        for p in ("train", "dev", "test"):
            assert check_datadir(d / f"fold{k}/{p}", emotions=True) == []
    assert set().union(*tests) == set(read_table(d / "all/spk2gender"))   # every speaker tested once
    assert sum(map(len, tests)) == 12
    # utterance ids start with the speaker; relative paths resolved from the CSV's folder
    wav = read_table(d / "all/wav.scp")
    assert wav["spk03-s03_sad"] == str(audio / "s03_sad.wav")
    # rerun with a split column: the folds of the earlier protocol are removed
    rows2 = [(f"audio/s{s:02d}_{e}.wav", f"spk{s:02d}", e, ["train", "validation", "test"][s % 3])
             for s in range(12) for e in EMOS]
    csv2 = write_csv(tmp_path / "m2.csv", ["path", "speaker", "emotion", "split"], rows2)
    prepare_manifest(csv2, d)
    assert sorted(p.name for p in d.iterdir()) == ["all", "dev", "test", "train"]
    assert len(read_table(d / "dev/utt2spk")) == 16
    assert not (d / "all/spk2gender").exists()       # no gender column: no spk2gender
    assert check_datadir(d / "test", emotions=True) == []


def test_manifest_segments(audio, tmp_path):
    rows = [(str(audio / "session.wav"), "A", "happy", "", 0.0, 1.0, "f"),
            (str(audio / "session.wav"), "B", "sad", "", 1.0, 2.5, "m"),
            (str(audio / "session.wav"), "A", "angry", "A_turn3", 2.5, 3.0, "f"),
            (str(audio / "s00_neutral.wav"), "C", "neutral", "", "", "", "m"),
            (str(audio / "session.wav"), "B", "sad", "", 2.0, 9.0, "m")]     # beyond the end
    csvp = write_csv(tmp_path / "seg.csv", ["path", "speaker", "emotion", "utt", "start", "end", "gender"], rows)
    c = prepare_manifest(csvp, tmp_path / "seg", folds=3)
    d = tmp_path / "seg/all"
    seg = read_table(d / "segments", split=True)
    assert seg["A-session-0000000"] == ["session", "0.000", "1.000"]
    assert seg["B-session-0000100"] == ["session", "1.000", "2.500"]
    assert seg["A_turn3"] == ["session", "2.500", "3.000"]
    assert seg["C-s00_neutral"] == ["s00_neutral", "0.000", "0.500"]
    assert read_table(d / "wav.scp") == {"session": str(audio / "session.wav"),
                                          "s00_neutral": str(audio / "s00_neutral.wav")}
    assert read_table(d / "utt2dur") == {"A-session-0000000": "1.000", "A_turn3": "0.500", "B-session-0000100": "1.500",
                                         "C-s00_neutral": "0.500"}
    assert len(c) == 4 and check_datadir(d) == []


def test_manifest_bad_input(audio, tmp_path, repo_root, capsys):
    with pytest.raises(PrepError, match="manifest .* does not exist"):
        prepare_manifest(tmp_path / "none.csv", tmp_path / "o")
    p = write_csv(tmp_path / "a.csv", ["path", "speaker"], [("audio/s00_sad.wav", "x")])
    with pytest.raises(PrepError, match=r"a.csv:1: missing required column\(s\) emotion"):
        prepare_manifest(p, tmp_path / "o")
    p = write_csv(tmp_path / "b.csv", ["path", "speaker", "emotion"],
                  [("audio/s00_sad.wav", "x", "sad"), ("audio/s00_happy.wav", "x", "bored")])
    with pytest.raises(PrepError, match=r"b.csv:3: emotion 'bored' is not one of the allowed"):
        prepare_manifest(p, tmp_path / "o", emotions=EMOS)
    p = write_csv(tmp_path / "c.csv", ["path", "speaker", "emotion", "split"],
                  [("audio/s00_sad.wav", "x", "sad", "holdout")])
    with pytest.raises(PrepError, match=r"c.csv:2: split 'holdout'"):
        prepare_manifest(p, tmp_path / "o")
    # absent and unreadable audio: reported, counted, skipped
    (tmp_path / "audio/broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    rows = [(f"audio/s{s:02d}_sad.wav", f"spk{s}", "sad", "train" if s < 4 else "test") for s in range(6)]
    rows += [("audio/missing.wav", "spk0", "sad", "train"), ("audio/broken.wav", "spk1", "sad", "train")]
    p = write_csv(tmp_path / "d.csv", ["path", "speaker", "emotion", "split"], rows)
    c = prepare_manifest(p, tmp_path / "o")
    err = capsys.readouterr().err
    assert "missing.wav: file does not exist" in err and "broken.wav: cannot read" in err
    assert "skipped 2 of 8" in err and len(c) == 6
    # the command line: one clear error line, no traceback
    r = subprocess.run([str(repo_root / "local/prepare_manifest.py"), "--emotions", "sad,happy",
                        str(tmp_path / "b.csv"), str(tmp_path / "o2")], capture_output=True, text=True)
    assert r.returncode == 1 and "b.csv:3: emotion 'bored'" in r.stderr and "Traceback" not in r.stderr


def test_rewrite_keeps_unchanged_files_and_drops_stale_features(audio, tmp_path, capsys):
    rows = [(f"audio/s{s:02d}_{e}.wav", f"spk{s:02d}", e, "train" if s < 8 else "test")
            for s in range(12) for e in EMOS]
    csvp = write_csv(tmp_path / "m.csv", ["path", "speaker", "emotion", "split"], rows)
    prepare_manifest(csvp, tmp_path / "c")
    d = tmp_path / "c/all"
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    (d / "feats.scp").write_text("x\n")
    (d / "split2").mkdir()
    prepare_manifest(csvp, tmp_path / "c")               # same corpus: nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name in before} == before
    assert (d / "feats.scp").exists()
    write_csv(csvp, ["path", "speaker", "emotion", "split"], rows[:-4])   # one speaker fewer
    prepare_manifest(csvp, tmp_path / "c")
    assert not (d / "feats.scp").exists() and not (d / "split2").exists()
    assert "removed stale feats.scp split2" in capsys.readouterr().err
    assert len(read_table(d / "utt2spk")) == 44 and check_datadir(d) == []
