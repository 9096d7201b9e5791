"""The synthetic demo corpus: distinct voices, 4 emotions per emotion speaker,
plausible durations, deterministic from its seed, and prepared by the real
manifest / MUSAN / RIRs code paths."""
from __future__ import annotations

import csv
import filecmp
import json
from dataclasses import asdict
import shutil

import numpy as np
import pytest
import soundfile as sf

from pyxv.corpora.check import check_datadir
from pyxv.corpora.demo import EMOTIONS, make_demo_corpus, make_voices
from pyxv.corpora.manifest import prepare_manifest
from pyxv.corpora.noise import prepare_musan, prepare_rirs

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "corpus"
    make_demo_corpus(root, seed=5, size="small", nj=2, log=lambda m: None)
    return root


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _logspec(path, nfft=512):
    x, sr = sf.read(path)
    assert sr == 16000
    frames = np.lib.stride_tricks.sliding_window_view(x, nfft)[::256] * np.hanning(nfft)
    p = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    e = p.sum(1)
    p = p[e > 0.1 * np.median(e)]               # speech frames only
    s = np.log(p.mean(0) + 1e-10)[8:200]        # 250 Hz .. 6.2 kHz
    return s - s.mean()                          # level-independent


def test_layout_and_counts(demo):
    pre, emo = _rows(demo / "pretrain.csv"), _rows(demo / "emotion.csv")
    pre_spk = {r["speaker"] for r in pre}
    emo_spk = {r["speaker"] for r in emo}
    assert len(pre_spk) == 12 and len(emo_spk) == 8 and not pre_spk & emo_spk
    assert len(pre) == 12 * 6 and len(emo) == 8 * 4 * 2
    g = {r["speaker"]: r["gender"] for r in emo}
    assert sorted(g.values()).count("f") == 4
    for s in emo_spk:   # all four emotions for every emotion speaker
        assert {r["emotion"] for r in emo if r["speaker"] == s} == set(EMOTIONS)
    # speaker-independent split, each gender in each part
    split = {}
    for r in emo:
        assert split.setdefault(r["speaker"], r["split"]) == r["split"]
    for part in ("train", "dev", "test"):
        assert {g[s] for s in split if split[s] == part} == {"m", "f"}
    for r in pre + emo:
        info = sf.info(demo / r["path"])
        assert info.samplerate == 16000 and info.channels == 1
        assert 0.8 < info.duration < 8.0, (r["path"], info.duration)
    assert len(list((demo / "musan/noise").rglob("*.wav"))) == 3
    assert len(list((demo / "musan/speech").rglob("*.wav"))) >= 7   # babble takes up to 7
    assert len(list((demo / "RIRS_NOISES/simulated_rirs").glob("*room/Room*/Room*-*.wav"))) == 8
    assert "SYNTHETIC" in (demo / "README.txt").read_text()


def test_voices_are_distinguishable(demo):
    """Every speaker's long-term spectrum differs: nearest speaker centroid
    (leave-one-out) finds the right speaker for most utterances, and no two
    speakers' centroids are as close as a speaker's utterances are to theirs."""
    rows = _rows(demo / "pretrain.csv") + _rows(demo / "emotion.csv")
    spk = np.array([r["speaker"] for r in rows])
    X = np.stack([_logspec(demo / r["path"]) for r in rows])
    speakers = sorted(set(spk))
    correct = 0
    for i in range(len(X)):
        dists = []
        for s in speakers:
            m = (spk == s)
            m[i] = False
            dists.append(np.linalg.norm(X[i] - X[m].mean(0)))
        correct += speakers[int(np.argmin(dists))] == spk[i]
    assert correct / len(X) > 0.8, correct / len(X)
    cent = np.stack([X[spk == s].mean(0) for s in speakers])
    d = np.linalg.norm(cent[:, None] - cent[None], axis=2) + np.eye(len(speakers)) * 1e9
    within = np.median([np.linalg.norm(X[i] - cent[speakers.index(spk[i])]) for i in range(len(X))])
    assert d.min() > 0.5 * within, (d.min(), within)


def test_emotions_differ_in_prosody(demo):
    rows = _rows(demo / "emotion.csv")
    level = {e: [] for e in EMOTIONS}
    for r in rows:
        x, _ = sf.read(demo / r["path"])
        level[r["emotion"]].append(20 * np.log10(np.sqrt(np.mean(x ** 2))))
    m = {e: np.mean(v) for e, v in level.items()}
    assert m["angry"] > m["happy"] > m["neutral"] > m["sad"], m


def test_deterministic_and_reused(demo, tmp_path):
    again = tmp_path / "again"
    make_demo_corpus(again, seed=5, size="small", nj=2, log=lambda m: None)
    assert filecmp.cmp(demo / "emotion.csv", again / "emotion.csv", shallow=False)
    for rel in ["emotion/wav/demo_e01/" + sorted(p.name for p in (demo / "emotion/wav/demo_e01").iterdir())[0],
                "pretrain/wav/demo_p03/demo_p03-002.wav", "musan/music/synth/music-synth-0001.wav",
                "RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav"]:
        assert filecmp.cmp(demo / rel, again / rel, shallow=False), rel
    # complete: a second call reuses it
    stamp = (again / ".demo_done").stat().st_mtime_ns
    msgs = []
    make_demo_corpus(again, seed=5, size="small", nj=2, log=msgs.append)
    assert "reusing" in msgs[0] and (again / ".demo_done").stat().st_mtime_ns == stamp
    # another seed gives other voices
    pre5, emo5 = make_voices(np.random.default_rng(5), 12, 8)
    pre6, emo6 = make_voices(np.random.default_rng(6), 12, 8)
    assert pre5 != pre6 and emo5 != emo6
    assert [asdict(v) for v in pre5 + emo5] == json.loads((demo / "voices.json").read_text())["pretrain"] + \
        json.loads((demo / "voices.json").read_text())["emotion"]


def test_prepared_through_real_code_paths(demo, tmp_path):
    c = prepare_manifest(demo / "emotion.csv", tmp_path / "demo", emotions=list(EMOTIONS))
    assert len(c) == 64
    for sub in ("all", "train", "dev", "test"):
        assert check_datadir(tmp_path / "demo" / sub, emotions=True) == []
    spk = lambda s: set((tmp_path / "demo" / s / "spk2gender").read_text().split()[::2])
    assert not spk("train") & spk("test") and not spk("dev") & spk("test")
    assert len(spk("train") | spk("dev") | spk("test")) == 8
    prepare_manifest(demo / "pretrain.csv", tmp_path / "pretrain", protocol=False, subset_name="train")
    assert check_datadir(tmp_path / "pretrain/train") == []
    prepare_musan(demo / "musan", tmp_path / "noise")
    prepare_rirs(demo / "RIRS_NOISES", tmp_path / "noise/rirs")
    for sub in ("musan_noise", "musan_music", "musan_speech", "rirs"):
        assert check_datadir(tmp_path / "noise" / sub) == []
    rirs = (tmp_path / "noise/rirs/utt2spk").read_text().split("\n")[0].split()
    assert rirs == ["mediumroom-Room001-00001", "mediumroom-Room001"]


def test_prepare_data_stage(demo, tmp_path, repo_root, ravdess_root):
    """local/prepare_data.sh as run.sh calls it: demo corpus, then a real
    corpus without pre-training/noise data (the demo's stand in, said plainly)."""
    import subprocess

    def run(*args):
        r = subprocess.run(["local/prepare_data.sh", "--demo-root", str(demo), "--demo-size", "small",
                            "--demo-seed", "5", *args], cwd=repo_root, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    data = tmp_path / "data"
    dirs = [str(data / "demo"), str(data / "pretrain"), str(data / "noise")]
    out = run("--corpus", "demo", "--ravdess-root", "", *dirs)
    assert "reusing it" in out and "done:" in out
    for sub in ("demo/all", "demo/train", "demo/dev", "demo/test", "pretrain/train", "noise/musan_noise",
                "noise/musan_music", "noise/musan_speech", "noise/rirs"):
        assert check_datadir(data / sub) == [], sub
    assert "skipping" in run("--corpus", "demo", *dirs)           # complete: nothing to do
    out = run("--corpus", "ravdess", "--ravdess-root", str(ravdess_root),
              str(data / "ravdess"), str(data / "pretrain"), str(data / "noise"))
    assert "SYNTHETIC demo voices" in out and "SYNTHETIC room impulse" in out
    assert len((data / "ravdess/all/utt2spk").read_text().splitlines()) == 672
    assert len(list((data / "ravdess").glob("fold*/test"))) == 6
