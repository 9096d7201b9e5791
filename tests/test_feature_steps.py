"""The feature and augmentation steps end to end, --nj 2 through the local job
runner, on a small data dir of real RAVDESS clips plus broken ones: outputs equal
the library's, bad utterances are named, counted and left out, nothing half-written."""
from __future__ import annotations

import os
import shutil
import subprocess

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pyxv.features.archive import ArkScpWriter
from pyxv.features.mfcc import Mfcc, utt_seed
from pyxv.features.vad import VadOptions, compute_vad
from pyxv.io import read_audio

from wav_datadirs import write_noise_datadirs, write_wav_datadir

GOOD = ["03-01-01-01-01-01-01", "03-01-03-02-01-02-02", "03-01-05-01-02-01-03", "03-01-04-02-02-02-04"]


def _run(repo, *args, ok=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True)
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def datadir(ravdess_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steps")
    wav = {}
    for i, g in enumerate(GOOD):
        a = g.split("-")[-1]
        wav[f"spk{a}-{g}"] = str(ravdess_root / f"Actor_{a}" / f"{g}.flac")
    # stereo: channels averaged (pyxv.io's rule)
    x, sr = sf.read(wav[f"spk01-{GOOD[0]}"], dtype="float32")
    sf.write(str(tmp / "stereo.flac"), np.stack([x, 0.5 * x], axis=1), sr)
    wav["spk05-stereo"] = str(tmp / "stereo.flac")
    # shorter than one window: with --snip-edges=false Kaldi still makes frames
    sf.write(str(tmp / "short.wav"), x[:150], sr)
    wav["spk05-short"] = str(tmp / "short.wav")
    (tmp / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(3000))
    wav["spk06-corrupt"] = str(tmp / "corrupt.flac")
    (tmp / "empty.wav").write_bytes(b"")
    wav["spk06-empty"] = str(tmp / "empty.wav")
    wav["spk06-pipe"] = "sox /nonexistent/file.wav -t wav - |"
    (tmp / "truncated.flac").write_bytes(open(wav[f"spk01-{GOOD[0]}"], "rb").read()[:20000])
    wav["spk06-truncated"] = str(tmp / "truncated.flac")
    wav["spk06-missing"] = str(tmp / "not_there.wav")
    return tmp, wav


def test_mfcc_vad_gemaps_steps(repo_root, datadir):
    tmp, wav = datadir
    d = tmp / "data" / "small"
    utts = write_wav_datadir(d, wav)
    bad = {"spk06-corrupt", "spk06-empty", "spk06-pipe", "spk06-missing", "spk06-truncated"}
    p = _run(repo_root, "steps/make_mfcc.sh", "--nj", "2", "--mfcc-config", "conf/mfcc_8k.conf",
             str(d), str(tmp / "log"), str(tmp / "mfcc"))
    assert f"5 of {len(utts)} utterances failed" in p.stderr
    for u in bad:
        assert f"ERROR utterance {u}" in p.stderr
    logs = "".join(f.read_text() for f in (tmp / "log").glob("make_mfcc_*.log"))
    assert all(f"ERROR utterance {u}" in logs for u in bad) and "command failed" in logs
    feats = kaldiio.load_scp(str(d / "feats.scp"))
    good = [u for u in utts if u not in bad]
    assert sorted(feats) == good
    assert sorted((d / "utt2spk").read_text().split()[::2]) == good      # the data dir was fixed
    assert not list((tmp / "mfcc").glob(".*tmp*"))
    mfcc = Mfcc.from_conf(repo_root / "conf" / "mfcc_8k.conf")
    n_frames = dict(line.split() for line in (d / "utt2num_frames").read_text().splitlines())
    for u in good:
        x, _ = read_audio(wav[u], sample_rate=8000)
        np.testing.assert_array_equal(feats[u], mfcc(x, seed=utt_seed(0, u)))
        assert int(n_frames[u]) == feats[u].shape[0]
    assert feats["spk05-short"].shape == (1, 23)      # 150 samples at 16 kHz -> 75 at 8 kHz
    assert (d / "conf" / "mfcc.conf").read_text() == (repo_root / "conf" / "mfcc_8k.conf").read_text()
    # second run: up to date, nothing done
    p = _run(repo_root, "steps/make_mfcc.sh", "--nj", "2", str(d), str(tmp / "log"), str(tmp / "mfcc"))
    assert "nothing to do" in p.stdout

    _run(repo_root, "steps/compute_vad.sh", "--nj", "2", "--vad-config", "conf/vad.conf",
         str(d), str(tmp / "log"), str(tmp / "mfcc"))
    vad = kaldiio.load_scp(str(d / "vad.scp"))
    opts = VadOptions.from_conf(repo_root / "conf" / "vad.conf")
    assert sorted(vad) == good
    for u in good:
        np.testing.assert_array_equal(vad[u], compute_vad(feats[u], opts))
    assert 0.2 < np.mean(vad[good[0]]) < 0.9
    _run(repo_root, "utils/validate_data_dir.sh", str(d))

    _run(repo_root, "steps/make_gemaps.sh", "--nj", "2", str(d), str(tmp / "log"), str(tmp / "gemaps"))
    func = kaldiio.load_scp(str(d / "gemaps.scp"))
    lld = kaldiio.load_scp(str(d / "gemaps_lld.scp"))
    for u in [v for v in good if v != "spk05-short"]:
        assert func[u].shape == (1, 88) and np.isfinite(func[u]).all()
        dur = sf.info(wav[u]).duration
        assert lld[u].shape[1] == 25 and abs(lld[u].shape[0] - 100 * dur) <= 5


def test_bad_conf_stops_before_jobs(repo_root, tmp_path, datadir):
    _, wav = datadir
    d = tmp_path / "d"
    write_wav_datadir(d, {k: v for k, v in wav.items() if k.startswith("spk01")})
    conf = tmp_path / "mfcc.conf"
    conf.write_text("--sample-frequency=8000\n--num-ceps=23\n--frame-lenght=25\n")
    p = _run(repo_root, "steps/make_mfcc.sh", "--nj", "1", "--mfcc-config", str(conf), str(d),
             str(tmp_path / "log"), str(tmp_path / "mfcc"), ok=False)
    assert p.returncode != 0 and "mfcc.conf:3: invalid option --frame-lenght" in p.stderr
    assert not (tmp_path / "mfcc").exists()


def test_ark_writer_leaves_nothing_on_failure(tmp_path):
    ark, scp = tmp_path / "a.ark", tmp_path / "a.scp"
    with pytest.raises(RuntimeError):
        with ArkScpWriter(ark, scp) as w:
            w.write("u1", np.ones((3, 2)))
            raise RuntimeError("job died")
    assert list(tmp_path.iterdir()) == []
    with ArkScpWriter(ark, scp, num_frames=tmp_path / "n") as w:
        w.write("u1", np.ones((3, 2)))
        w.write("u2", np.arange(4.0))
    m = kaldiio.load_scp(str(scp))
    np.testing.assert_array_equal(m["u2"], np.arange(4.0))
    assert (tmp_path / "n").read_text() == "u1 3\nu2 4\n"
    assert scp.read_text().split()[1].startswith(str(ark.absolute()) + ":")


def test_augment_step(repo_root, ravdess_root, tmp_path):
    wav = {f"spk{g.split('-')[-1]}-{g}": str(ravdess_root / f"Actor_{g.split('-')[-1]}" / f"{g}.flac") for g in GOOD}
    wav["spk06-corrupt"] = str(tmp_path / "corrupt.flac")
    (tmp_path / "corrupt.flac").write_bytes(b"RIFF" + os.urandom(100))
    d = tmp_path / "data" / "all"
    utts = write_wav_datadir(d, wav)
    (d / "utt2emo").write_text("".join(f"{u} {'angry' if i % 2 else 'sad'}\n" for i, u in enumerate(utts)))
    (d / "spk2gender").write_text("".join(f"spk0{i} {'m' if i % 2 else 'f'}\n" for i in (1, 2, 3, 4, 6)))
    write_noise_datadirs(tmp_path / "noise", sorted(ravdess_root.glob("Actor_2*/*.flac"))[:8])
    conf = tmp_path / "aug.yaml"
    conf.write_text("seed: 5\ncopies_per_utt: 4\n")
    p = _run(repo_root, "steps/augment_data_dir.sh", "--nj", "2", "--config", str(conf),
             str(d), str(tmp_path / "noise"), str(tmp_path / "data" / "all_aug"))
    assert "1 of 5 utterances failed" in p.stderr and "ERROR utterance spk06-corrupt" in p.stderr
    out = tmp_path / "data" / "all_aug"
    good = [u for u in utts if u != "spk06-corrupt"]
    aug = dict(line.split() for line in (out / "utt2orig").read_text().splitlines())
    assert sorted(aug) == sorted(f"{u}-{t}" for u in good for t in ("reverb", "noise", "music", "babble"))
    assert all(a.startswith(o) for a, o in aug.items())
    emo = dict(line.split() for line in (d / "utt2emo").read_text().splitlines())
    aemo = dict(line.split() for line in (out / "utt2emo").read_text().splitlines())
    assert all(aemo[a] == emo[o] for a, o in aug.items())
    for t in ("reverb", "noise", "music", "babble"):
        assert len((tmp_path / "data" / f"all_{t}" / "utt2spk").read_text().splitlines()) == len(good)
    dur = dict(line.split() for line in (out / "utt2dur").read_text().splitlines())
    for a, o in aug.items():
        y, sr = sf.read(f"{out}/audio/{a.split('-')[0]}/{a}.flac")
        assert sr == 16000 and abs(len(y) / sr - sf.info(wav[o]).duration) < 1e-3
        assert abs(float(dur[a]) - len(y) / sr) < 1e-3
    # same seed with another job split: identical audio
    out1 = tmp_path / "data1" / "all_aug"
    _run(repo_root, "steps/augment_data_dir.sh", "--nj", "1", "--config", str(conf),
         str(d), str(tmp_path / "noise"), str(out1))
    for a in aug:
        spk = a.split("-")[0]
        np.testing.assert_array_equal(sf.read(f"{out}/audio/{spk}/{a}.flac")[0], sf.read(f"{out1}/audio/{spk}/{a}.flac")[0])
    p = _run(repo_root, "steps/augment_data_dir.sh", "--nj", "1", "--config", str(conf),
             str(d), str(tmp_path / "noise"), str(out1))
    assert "nothing to do" in p.stdout
    shutil.rmtree(tmp_path / "noise" / "rirs")
    p = _run(repo_root, "steps/augment_data_dir.sh", "--config", str(conf), "--overwrite", "true",
             str(d), str(tmp_path / "noise"), str(out1), ok=False)
    assert p.returncode != 0 and "rirs/wav.scp does not exist" in p.stderr
