"""VoxCeleb (wav tree, filters, meta, m4a refused), MUSAN (vocal music left
out) and RIRS_NOISES layouts."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from pyxv.corpora.check import check_datadir
from pyxv.corpora.common import PrepError
from pyxv.corpora.noise import prepare_musan, prepare_rirs
from pyxv.corpora.voxceleb import prepare_voxceleb
from pyxv.io import read_table


def _wav(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)


@pytest.fixture
def vox(tmp_path):
    root = tmp_path / "voxceleb1"
    # id10001: 3 utts (one 1 s), id10002: 2 utts, id10003: 1 utt
    for spk, vids in {"id10001": {"1zcIwhmdeo4": [4, 5], "7gWzIy6yIIk": [1]},
                      "id10002": {"abc": [4, 6]}, "id10003": {"xyz": [5]}}.items():
        for vid, durs in vids.items():
            for n, d in enumerate(durs, 1):
                _wav(root / "wav" / spk / vid / f"{n:05d}.wav", d)
    (root / "vox1_meta.csv").write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
                                        "id10001\tA.J._Buckley\tm\tIreland\tdev\n"
                                        "id10002\tA.R._Rahman\tm\tIndia\tdev\n"
                                        "id10003\tAamir_Khan\tf\tIndia\tdev\n")
    return root


def test_voxceleb(vox, tmp_path, capsys):
    prepare_voxceleb(vox, tmp_path / "train")
    d = tmp_path / "train"
    u2s = read_table(d / "utt2spk")
    assert len(u2s) == 6 and u2s["id10001-1zcIwhmdeo4-00002"] == "id10001"
    assert read_table(d / "spk2gender") == {"id10001": "m", "id10002": "m", "id10003": "f"}
    assert check_datadir(d) == []
    # filters: utterances under 2 s, then speakers with fewer than 2 utterances
    prepare_voxceleb(vox, tmp_path / "f", min_dur=2.0, min_utts=2)
    assert sorted(read_table(tmp_path / "f/utt2spk")) == [
        "id10001-1zcIwhmdeo4-00001", "id10001-1zcIwhmdeo4-00002", "id10002-abc-00001", "id10002-abc-00002"]
    # no meta: no spk2gender, said in the log
    os.unlink(vox / "vox1_meta.csv")
    prepare_voxceleb(vox / "wav", tmp_path / "nometa")
    assert not (tmp_path / "nometa/spk2gender").exists()
    assert "writing no spk2gender" in capsys.readouterr().err
    assert check_datadir(tmp_path / "nometa") == []


def test_voxceleb_m4a_refused(tmp_path):
    p = tmp_path / "vox2/aac/id00012/21Uxsk56VDQ/00001.m4a"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    with pytest.raises(PrepError, match=r"(?s)\.m4a.*ffmpeg .*-ac 1 -ar 16000"):
        prepare_voxceleb(tmp_path / "vox2", tmp_path / "o")
    with pytest.raises(PrepError, match="VoxCeleb root"):
        prepare_voxceleb(tmp_path / "nope", tmp_path / "o")


def test_musan_and_rirs(tmp_path):
    m = tmp_path / "musan"
    _wav(m / "noise/free-sound/noise-free-sound-0000.wav", 2)
    _wav(m / "noise/sound-bible/noise-sound-bible-0000.wav", 3)
    _wav(m / "music/fma/music-fma-0000.wav", 4)
    _wav(m / "music/fma/music-fma-0001.wav", 4)
    (m / "music/fma/ANNOTATIONS").write_text("music-fma-0000 Pop Y Artist\nmusic-fma-0001 Classical N Other\n")
    _wav(m / "speech/librivox/speech-librivox-0000.wav", 5)
    prepare_musan(tmp_path, tmp_path / "noise")          # the folder above musan/ works too
    assert list(read_table(tmp_path / "noise/musan_music/utt2spk")) == ["music-fma-0001"]
    assert len(read_table(tmp_path / "noise/musan_noise/utt2dur")) == 2
    prepare_musan(m, tmp_path / "noise2", use_vocals=True)
    assert len(read_table(tmp_path / "noise2/musan_music/utt2spk")) == 2
    r = tmp_path / "RIRS_NOISES/simulated_rirs"
    for room, k in (("smallroom", 1), ("smallroom", 2), ("mediumroom", 7)):
        _wav(r / room / f"Room{k:03d}" / f"Room{k:03d}-00001.wav", 0.3)
    _wav(r / "largeroom/Room001/Room001-00001.wav", 0.3)
    prepare_rirs(tmp_path / "RIRS_NOISES", tmp_path / "noise/rirs")
    assert read_table(tmp_path / "noise/rirs/utt2spk") == {
        "mediumroom-Room007-00001": "mediumroom-Room007", "smallroom-Room001-00001": "smallroom-Room001",
        "smallroom-Room002-00001": "smallroom-Room002"}
    for sub in ("musan_noise", "musan_music", "musan_speech", "rirs"):
        assert check_datadir(tmp_path / "noise" / sub) == []
    with pytest.raises(PrepError, match="no simulated_rirs"):
        prepare_rirs(tmp_path / "musan", tmp_path / "x")
