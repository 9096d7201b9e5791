"""IEMOCAP on a generated tree in the real format: label/annotator/header lines,
xxx/fru/oth left out, exc merged into happy, scripted and impro05a-style names,
the speaker rule (last field's letter), leave-one-session-out folds with dev."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from pyxv.corpora.check import check_datadir
from pyxv.corpora.common import PrepError
from pyxv.corpora.iemocap import prepare_iemocap, speaker_of
from pyxv.io import read_table

# (utterance, code) per session; the dialog's own letter (Ses01F/Ses03M) is
# not the speaker's.
def _dialogs(n):
    s = f"Ses0{n}"
    return {
        f"{s}F_impro01": [(f"{s}F_impro01_F000", "neu"), (f"{s}F_impro01_M000", "exc"),
                          (f"{s}F_impro01_F001", "xxx"), (f"{s}F_impro01_M001", "ang"),
                          (f"{s}F_impro01_F002", "fru")],
        f"{s}M_script01_1": [(f"{s}M_script01_1_F000", "sad"), (f"{s}M_script01_1_M000", "hap"),
                             (f"{s}M_script01_1_M001", "oth"), (f"{s}M_script01_1_F001", "neu")],
        f"{s}M_impro05a": [(f"{s}M_impro05a_M012", "ang"), (f"{s}M_impro05a_F003", "exc")],
    }


def _label_file(dialog, items):
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    t = 1.0
    for utt, code in items:
        lines.append(f"[{t:.4f} - {t + 2.1:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 2.5000]")
        lines += ["C-E1:\tNeutral;\t()", "C-E2:\tFrustration;\t(annoyed)", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
        t += 3
    return "\n".join(lines) + "\n"


def make_tree(root, tiny):
    for n in range(1, 6):
        sess = root / f"Session{n}"
        emo = sess / "dialog/EmoEvaluation"
        (emo / "Categorical").mkdir(parents=True)
        (emo / "Categorical" / "x_e1_cat.txt").write_text("[garbage that must be ignored\n")
        for dialog, items in _dialogs(n).items():
            (emo / f"{dialog}.txt").write_text(_label_file(dialog, items))
            (emo / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
            wd = sess / "sentences/wav" / dialog
            wd.mkdir(parents=True)
            for utt, _ in items:
                os.symlink(tiny, wd / f"{utt}.wav")
    return root


@pytest.fixture
def tree(tmp_path):
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.zeros(4000, np.float32), 16000)
    return make_tree(tmp_path / "IEMOCAP_full_release", tiny)


def test_speaker_rule():
    assert speaker_of("Ses01F_impro01_M003") == ("Ses01M", "m")
    assert speaker_of("Ses03M_impro05a_F012") == ("Ses03F", "f")
    assert speaker_of("Ses05M_script01_1_F000") == ("Ses05F", "f")


def test_iemocap_prepared(tree, tmp_path):
    prepare_iemocap(tree, tmp_path / "iemocap")
    d = tmp_path / "iemocap"
    emo = read_table(d / "all/utt2emo")
    # per session: 11 labelled, 3 left out (xxx fru oth) -> 8; 5 sessions
    assert len(emo) == 40
    assert emo["Ses01M-Ses01F_impro01_M000"] == "happy"            # exc -> happy
    assert emo["Ses03F-Ses03M_impro05a_F003"] == "happy"
    assert emo["Ses02M-Ses02M_script01_1_M000"] == "happy"         # hap
    assert not any("F001" in u and "impro01" in u for u in emo)      # xxx
    assert sorted(set(emo.values())) == ["angry", "happy", "neutral", "sad"]
    utt2spk = read_table(d / "all/utt2spk")
    assert utt2spk["Ses01M-Ses01F_impro01_M001"] == "Ses01M"         # last field, not Ses01F
    assert utt2spk["Ses03F-Ses03M_impro05a_F003"] == "Ses03F"
    g = read_table(d / "all/spk2gender")
    assert g == {f"Ses0{n}{x}": x.lower() for n in range(1, 6) for x in "FM"}
    assert read_table(d / "all/wav.scp")["Ses01M-Ses01F_impro01_M001"].endswith(
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav")
    for k in range(1, 6):
        spk = {p: set(read_table(d / f"fold{k}/{p}/spk2gender")) for p in ("train", "dev", "test")}
        assert spk["test"] == {f"Ses0{k}F", f"Ses0{k}M"}
        nxt = k % 5 + 1
        assert spk["dev"] == {f"Ses0{nxt}F", f"Ses0{nxt}M"}
        assert spk["train"] == set(g) - spk["test"] - spk["dev"]
        for p in ("train", "dev", "test"):
            assert check_datadir(d / f"fold{k}/{p}", emotions=True) == []


def test_iemocap_bad_input(tree, tmp_path, capsys):
    with pytest.raises(PrepError, match="IEMOCAP root"):
        prepare_iemocap(tmp_path / "nope", tmp_path / "o")
    # an absent clip: reported and skipped, the rest prepared
    os.unlink(tree / "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_F000.wav")
    c = prepare_iemocap(tree, tmp_path / "o")
    err = capsys.readouterr().err
    assert "Ses02F_impro01_F000.wav: file does not exist" in err and "skipped 1 of 40" in err
    assert len(c) == 39
    # a label line that does not parse: file and line
    f = tree / "Session4/dialog/EmoEvaluation/Ses04M_script01_1.txt"
    lines = f.read_text().splitlines()
    lines[6] = "[6.2901 - 8.2357]\tSes04M_script01_1_M000\thap"   # no [v, a, d]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(PrepError, match=r"Ses04M_script01_1.txt:7: cannot parse"):
        prepare_iemocap(tree, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()      # stopped before any work
    # a missing label folder
    f.unlink()
    os.rename(tree / "Session4/dialog/EmoEvaluation", tree / "Session4/dialog/Emo")
    with pytest.raises(PrepError, match="Session4/dialog/EmoEvaluation does not exist"):
        prepare_iemocap(tree, tmp_path / "o3")
