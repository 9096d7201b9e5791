"""Augmentation: measured SNRs of written FLACs match the drawn ones, reverb keeps
length and power, the same seed gives the same output, bad input is reported."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pyxv.augment import Sources, augment_one, choose_types, load_config, reverberate, utt_rng, write_flac
from pyxv.config import ConfigError

SR = 16000


def _wav(path, x, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(x, dtype=np.float32), sr, subtype="PCM_16")
    return str(path)


def _dd(d, items):
    d.mkdir(parents=True, exist_ok=True)
    items = sorted(items)
    (d / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in items))
    (d / "utt2spk").write_text("".join(f"{u} {u}\n" for u, _ in items))
    (d / "spk2utt").write_text("".join(f"{u} {u}\n" for u, _ in items))


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory):
    """Uncorrelated noise sources of assorted lengths (some shorter than the
    speech, so noises repeat and loop), rooms named like RIRS_NOISES."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    a = root / "audio"
    _dd(root / "musan_noise", [(f"noise{i}", _wav(a / f"n{i}.wav", 0.05 * rng.standard_normal(int(SR * (0.6 + 0.4 * i)))))
                               for i in range(3)])
    _dd(root / "musan_music", [(f"music{i}", _wav(a / f"m{i}.wav", 0.1 * rng.standard_normal(int(SR * (0.8 + i)))))
                               for i in range(2)])
    _dd(root / "musan_speech", [(f"speech{i}", _wav(a / f"s{i}.wav", 0.1 * rng.standard_normal(int(SR * (1.5 + 0.3 * i)))))
                                for i in range(8)])
    rirs = []
    for room, rt in (("smallroom", 0.15), ("mediumroom", 0.4)):
        n = int(SR * rt)
        h = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.2
        h[:30] = 0
        h[30] = 0.9
        rirs.append((f"{room}-Room001-00001", _wav(a / f"{room}.wav", h)))
    _dd(root / "rirs", rirs)
    return root


def _speech(seed=1, seconds=3.0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    env = (np.sin(2 * np.pi * 1.5 * t) > 0).astype(np.float64) * 0.9 + 0.1
    return (3000 * env * (np.sin(2 * np.pi * 180 * t) + 0.5 * rng.standard_normal(len(t)))).astype(np.float32)


def _snr(clean, noisy):
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))


def _roundtrip(tmp_path, y, name):
    p = tmp_path / f"{name}.flac"
    write_flac(p, y, SR)
    z, sr = sf.read(str(p), dtype="float64")
    assert sr == SR
    return z * 32768.0


@pytest.mark.parametrize("seed", range(4))
def test_measured_snr_matches_drawn(tmp_path, noise_dir, seed):
    cfg = load_config_default(tmp_path)
    src = Sources(noise_dir)
    x = _speech(seed)
    xq = np.round(x).astype(np.float64)     # what the FLAC round trip leaves of the clean part
    for t in ("noise", "music", "babble"):
        y, info = augment_one(x, SR, t, cfg, src, utt_rng(seed, f"u{seed}-{t}"))
        assert len(y) == len(x) and info["gain"] == 1.0
        z = _roundtrip(tmp_path, y, f"{t}{seed}")
        comps = info["components"]
        if t == "noise":   # foreground noises at their own SNRs, interval apart: measure each span
            assert len(comps) >= 2 and comps[0]["start"] == 0.0
            for c in comps:
                s, n = int(round(c["start"] * SR)), int(round(c["length"] * SR))
                p_noise = np.mean((z[s:s + n] - xq[s:s + n]) ** 2)
                got = 10 * np.log10(np.mean(xq ** 2) / p_noise)
                assert abs(got - c["snr"]) < 0.5, (c, got)
                assert c["snr"] in (15, 10, 5, 0)
            gaps = [(b["start"] - a["start"] - a["length"]) for a, b in zip(comps, comps[1:])]
            assert np.allclose(gaps, 1.0, atol=1e-3)
        else:              # background: every component covers the clip; uncorrelated powers add
            assert all(c["start"] == 0 and abs(c["length"] - len(x) / SR) < 1e-3 for c in comps)
            want = -10 * np.log10(sum(10 ** (-c["snr"] / 10) for c in comps))
            got = _snr(xq, z)
            assert abs(got - want) < 0.5, (t, comps, got, want)
            if t == "music":
                assert len(comps) == 1 and comps[0]["snr"] in (15, 10, 8, 5)
            else:
                assert 3 <= len(comps) <= 7 and len({c["source"] for c in comps}) == len(comps)
                assert all(c["snr"] in (20, 17, 15, 13) for c in comps)


def load_config_default(tmp_path):
    p = tmp_path / "aug.yaml"
    p.write_text("seed: 3\ncopies_per_utt: 4\n")
    return load_config(p)


def test_reverb_keeps_length_and_power(noise_dir, tmp_path):
    cfg = load_config_default(tmp_path)
    x = _speech(5)
    y, info = augment_one(x, SR, "reverb", cfg, Sources(noise_dir), utt_rng(1, "r"))
    assert y.shape == x.shape and info["rir"].endswith("-Room001-00001")
    assert np.mean(y.astype(np.float64) ** 2) == pytest.approx(np.mean(x.astype(np.float64) ** 2), rel=1e-3)
    assert not np.allclose(y, x, atol=100)
    # a unit impulse RIR delayed by 30 samples gives the input back (aligned by the peak)
    h = np.zeros(200)
    h[30] = 1.0
    np.testing.assert_allclose(reverberate(x, h), x, rtol=1e-4, atol=1e-2)


def test_same_seed_same_output(noise_dir, tmp_path):
    cfg = load_config_default(tmp_path)
    x = _speech(2)
    for t in ("reverb", "noise", "music", "babble"):
        a = augment_one(x, SR, t, cfg, Sources(noise_dir), utt_rng(9, f"u-{t}"))
        b = augment_one(x, SR, t, cfg, Sources(noise_dir), utt_rng(9, f"u-{t}"))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]
    c = augment_one(x, SR, "babble", cfg, Sources(noise_dir), utt_rng(10, "u-babble"))
    assert not np.array_equal(a[0], c[0])


def test_choose_types_and_config(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("seed: 1\ncopies_per_utt: 2\n")
    cfg = load_config(p)
    picks = [choose_types(cfg, f"utt{i}") for i in range(200)]
    assert all(len(x) == 2 and len(set(x)) == 2 for x in picks)
    assert picks == [choose_types(cfg, f"utt{i}") for i in range(200)]
    counts = {t: sum(t in x for x in picks) for t in ("reverb", "noise", "music", "babble")}
    assert all(60 < c < 140 for c in counts.values()), counts
    for bad, msg in (("noise:\n  snr: [1]\n", "unknown key 'noise.snr'"), ("copies_per_utt: 5\n", "copies_per_utt"),
                     ("typo: 1\n", "unknown key 'typo'"), ("types: [reverb, wind]\n", "types")):
        p.write_text(bad)
        with pytest.raises(ConfigError, match=msg):
            load_config(p)
    from pathlib import Path
    shipped = load_config(Path(__file__).resolve().parents[1] / "conf" / "augment.yaml")
    assert shipped["noise"]["snrs"] == [15, 10, 5, 0] and shipped["music"]["snrs"] == [15, 10, 8, 5]
    assert shipped["babble"]["snrs"] == [20, 17, 15, 13] and shipped["babble"]["num"] == [3, 4, 5, 6, 7]


def test_clipping_is_avoided_by_scaling(noise_dir, tmp_path):
    cfg = load_config_default(tmp_path)
    x = np.clip(_speech(3) * 10, -32000, 32000)
    y, info = augment_one(x, SR, "noise", cfg, Sources(noise_dir), utt_rng(0, "loud"))
    assert np.abs(y).max() <= 32767.0 and info["gain"] < 1.0
