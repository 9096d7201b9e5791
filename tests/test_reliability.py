"""Faults, tried with real processes: kill -9 of training and of make_mfcc at a
random point, then a rerun (outputs equal an uninterrupted run's); a full disk
(a small tmpfs, root only) for features, augmentation, extraction and
checkpoints (the job stops at once naming the path, nothing half-written
remains, a rerun after space returns completes with every utterance); two
run.sh in one directory."""
from __future__ import annotations

import copy
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from wav_datadirs import write_noise_datadirs, write_wav_datadir
from xvector_synth import TINY, make_datadir

ENV = dict(os.environ, OMP_NUM_THREADS="1")
PY = sys.executable


def _run(repo, *args, ok=True, timeout=180):
    p = subprocess.run([str(a) for a in args], cwd=repo, env=ENV, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def _start(repo, *args, log):
    # A session of its own, so that kill -9 reaches the whole job tree.
    return subprocess.Popen([str(a) for a in args], cwd=repo, env=ENV, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _kill9(p):
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)


def _leftovers(root: Path) -> list[str]:
    """Temporary files and staging folders anywhere under ``root``."""
    return sorted(str(p) for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".new"))


def _tiny_conf(path: Path, **train) -> Path:
    c = copy.deepcopy(TINY)
    c["train"].update(train)
    path.write_text(yaml.safe_dump(c))
    return path


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ------------------------------------------------------------------ kill -9
def _train_in_process(d: Path, conf: Path, out: Path):
    """What ``python -m pyxv.bin.train_xvector --config conf d out`` does, in this
    process (one thread, as the tool under OMP_NUM_THREADS=1): the uninterrupted reference."""
    from pyxv.features.network_input import FeatureSource
    from pyxv.train.trainer import train_classifier

    src = FeatureSource(d / "feats.scp", vad_scp=d / "vad.scp", cmn_window=300, apply_vad=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_classifier(src, dict(ln.split() for ln in (d / "utt2spk").read_text().splitlines()), str(conf),
                         out, utt2orig={}, extra={}, use_gpu=False, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out / "final.pt"


def test_kill_9_of_training_then_rerun_gives_identical_weights(repo_root, tmp_path):
    rnd = random.Random()
    seed = rnd.randrange(10**6)
    rnd.seed(seed)
    d = tmp_path / "data"
    make_datadir(d, n_spk=4, n_utt=8)
    conf = _tiny_conf(tmp_path / "x.yaml", epochs=2, steps_per_epoch=8, checkpoint_interval=2)
    train = [PY, "-m", "pyxv.bin.train_xvector", "--use-gpu", "no", "--config", conf, d]
    # Killed after a random number of checkpoints (6 of 8 are written before the
    # last epoch ends) plus a random fraction of a step. On a busy machine this
    # process may look too late, when training has ended: then again, earlier.
    after = rnd.randint(1, 6)
    for attempt in range(3):
        shutil.rmtree(tmp_path / "b", ignore_errors=True)
        log = tmp_path / "killed.log"
        p = _start(repo_root, *train, tmp_path / "b", log=log)
        t0 = time.time()
        while log.read_text().count("checkpoint") < after and p.poll() is None and time.time() - t0 < 120:
            time.sleep(0.02)
        time.sleep(rnd.uniform(0, 0.05))
        _kill9(p)
        if not (tmp_path / "b" / "final.pt").exists():
            break
        after = 1
    assert not (tmp_path / "b" / "final.pt").exists(), f"training always ended before the kill (seed {seed})"
    r = _run(repo_root, *train, tmp_path / "b")
    assert "resuming from" in r.stdout, r.stdout
    _assert_same_weights(_train_in_process(d, conf, tmp_path / "full"), tmp_path / "b" / "final.pt")
    assert _leftovers(tmp_path / "b") == []


def _emotion_corpus(root: Path) -> tuple[Path, Path]:
    """data/emo/{all,fold1/{train,test}}: synthetic features of 6 speakers x 8
    utterances, 2 emotions; and an emotion config for the random-init MFCC
    system with a tiny network checkpointed every 2 steps."""
    from pyxv.datadir import write_datadir

    emo = root / "data" / "emo"
    u2s = make_datadir(emo / "all", n_spk=6, n_utt=8)
    u2e = {u: ("angry" if int(u[-2:]) % 2 else "sad") for u in u2s}
    write_datadir(emo / "all", utt2spk=u2s, wav_scp={u: "/dev/null" for u in u2s}, utt2emo=u2e)
    for name, spks in (("train", {"spk2", "spk3", "spk4", "spk5"}), ("test", {"spk0", "spk1"})):
        us = {u: s for u, s in u2s.items() if s in spks}
        write_datadir(emo / "fold1" / name, utt2spk=us, wav_scp={u: "/dev/null" for u in us},
                      utt2emo={u: u2e[u] for u in us})
    arch = _tiny_conf(root / "arch.yaml", checkpoint_interval=2)
    conf = root / "emotion.yaml"
    conf.write_text(yaml.safe_dump({"seed": 3, "nnet": {
        "architecture": str(arch), "epochs": 3, "steps_per_epoch": 6, "batch_size": 8, "chunk_min": 40,
        "chunk_max": 60, "warmup_steps": 2, "patience": 0, "min_frames": 20, "dev_fraction": 0.25}}))
    return emo, conf


def test_kill_9_of_an_emotion_fold_then_rerun_gives_identical_posteriors(repo_root, tmp_path):
    """The fine-tuned and random-init emotion systems train per fold with the same
    trainer: a killed fold job, run again, resumes and ends as an uninterrupted one."""
    from pyxv.emotion import systems
    from pyxv.emotion.config import load_emotion_config

    rnd = random.Random()
    emo, conf = _emotion_corpus(tmp_path)
    job = [PY, "-m", "pyxv.bin.train_emotion", "--config", conf, "--system", "randinit_mfcc", "--fold", "1", emo]
    after = rnd.randint(1, 6)          # of 8 step checkpoints before the last epoch ends
    log = tmp_path / "killed.log"
    p = _start(repo_root, *job, tmp_path / "b", log=log)
    t0 = time.time()
    while log.read_text().count("INFO] checkpoint") < after and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.02)
    _kill9(p)
    fold_b = tmp_path / "b" / "randinit_mfcc_clean" / "fold1"
    assert not (fold_b / "metrics.json").exists() and ckpt_count(fold_b) > 0
    r = _run(repo_root, *job, tmp_path / "b")
    assert "resuming from" in r.stdout + r.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        systems.run_fold("randinit_mfcc", "clean", emo, 1, tmp_path / "a", load_emotion_config(conf))
    finally:
        torch.set_num_threads(threads)
    fold_a = tmp_path / "a" / "randinit_mfcc_clean" / "fold1"
    assert (fold_a / "posteriors").read_bytes() == (fold_b / "posteriors").read_bytes()
    _assert_same_weights(fold_a / "final.pt", fold_b / "final.pt")


def ckpt_count(d: Path) -> int:
    return len(list((d / "checkpoints").glob("*.pt")))


@pytest.fixture
def ravdess_dir(ravdess_root):
    """``make(d)`` writes a data dir of 8 real RAVDESS clips (2 of each of 4 actors); returns its utts."""
    clips = [f for a in ("01", "02", "03", "04") for f in sorted((ravdess_root / f"Actor_{a}").glob("*.flac"))[:2]]
    return lambda d: write_wav_datadir(d, {f"spk{f.stem[-2:]}-{f.stem}": str(f) for f in clips})


def _feats(data: Path) -> dict:
    return {u: np.array(m) for u, m in kaldiio.load_scp_sequential(str(data / "feats.scp"))}


def _mfcc_reference(repo_root, data: Path) -> dict:
    """What steps/make_mfcc.sh computes, by the library in this process."""
    from pyxv.features.mfcc import Mfcc, utt_seed
    from pyxv.io import read_audio

    mfcc = Mfcc.from_conf(repo_root / "conf" / "mfcc_8k.conf")
    wav = dict(ln.split(None, 1) for ln in (data / "wav.scp").read_text().splitlines())
    return {u: mfcc(read_audio(w, sample_rate=8000)[0], seed=utt_seed(0, u)) for u, w in wav.items()}


def test_kill_9_of_make_mfcc_then_rerun_gives_identical_arks(repo_root, tmp_path, ravdess_dir):
    rnd = random.Random()
    b = tmp_path / "b"
    utts = ravdess_dir(b)
    step = ["steps/make_mfcc.sh", "--nj", "2", b, tmp_path / "log_b", tmp_path / "mfcc_b"]
    p = _start(repo_root, *step, log=tmp_path / "killed.log")
    time.sleep(rnd.uniform(0.5, 3.0))
    _kill9(p)
    _run(repo_root, *step)
    ref, got = _mfcc_reference(repo_root, b), _feats(b)
    assert sorted(got) == sorted(utts)
    for u in utts:
        assert np.array_equal(ref[u], got[u]), u
    assert _leftovers(tmp_path / "mfcc_b") == [] and _leftovers(b) == []


# -------------------------------------------------------------- full disk
def _mount_tmpfs(where: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KB tmpfs; ``grow()`` gives it room again."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is made with a tmpfs mount, which needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        _mount_tmpfs(disk, "200k")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")

    class Disk:
        path = disk

        @staticmethod
        def grow():
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)

        @staticmethod
        def fill():
            """Fill it to the last byte (a file that the caller removes to free it)."""
            fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                for block in (1 << 16, 4096, 1):
                    while True:
                        try:
                            os.write(fd, b"\0" * block)
                        except OSError:
                            break
            finally:
                os.close(fd)
    try:
        yield Disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _says_disk_full(text: str, path: Path) -> None:
    line = next((ln for ln in text.splitlines() if "FATAL" in ln or "cannot write" in ln), "")
    assert str(path) in line and "No space left on device" in line and "MB free on" in line, text


def test_full_disk_features(repo_root, tmp_path, small_disk, ravdess_dir):
    d = tmp_path / "data"
    utts = ravdess_dir(d)
    mfcc = small_disk.path / "mfcc"
    logs = tmp_path / "log"
    p = _run(repo_root, "steps/make_mfcc.sh", "--nj", "1", d, logs, mfcc, ok=False)
    assert p.returncode != 0
    _says_disk_full(p.stdout + p.stderr, mfcc)
    joblogs = "".join(f.read_text() for f in logs.glob("make_mfcc_*.log"))
    assert "ERROR utterance" not in joblogs and joblogs.count("FATAL") >= 1
    assert not (d / "feats.scp").exists() and list(mfcc.iterdir()) == []   # nothing half-written
    small_disk.grow()
    _run(repo_root, "steps/make_mfcc.sh", "--nj", "1", d, logs, mfcc)
    before = (d / "feats.scp").read_bytes()
    assert sorted(_feats(d)) == sorted(utts)
    # The disk fills again: a redo fails and leaves the previous complete outputs as they were.
    small_disk.fill()
    p = _run(repo_root, "steps/make_mfcc.sh", "--nj", "1", "--overwrite", "true", d, logs, mfcc, ok=False)
    assert p.returncode != 0 and "previous outputs left as they were" in p.stderr, p.stderr
    assert (d / "feats.scp").read_bytes() == before and sorted(_feats(d)) == sorted(utts)
    assert _leftovers(small_disk.path) == []


def test_full_disk_augmentation(repo_root, tmp_path, small_disk, ravdess_root, ravdess_dir):
    d = tmp_path / "data" / "all"
    utts = ravdess_dir(d)
    noise = tmp_path / "noise"
    write_noise_datadirs(noise, sorted(ravdess_root.glob("Actor_2*/*.flac"))[:8])
    conf = tmp_path / "aug.yaml"
    conf.write_text("seed: 5\ncopies_per_utt: 1\n")
    out = small_disk.path / "all_aug"
    p = _run(repo_root, "steps/augment_data_dir.sh", "--nj", "2", "--config", conf, d, noise, out, ok=False)
    assert p.returncode != 0
    _says_disk_full(p.stdout + p.stderr, out)
    assert "ERROR utterance" not in p.stdout + p.stderr
    assert not (out / "wav.scp").exists() and not (out / "audio").exists() and _leftovers(small_disk.path) == []
    small_disk.grow()
    _run(repo_root, "steps/augment_data_dir.sh", "--nj", "2", "--config", conf, d, noise, out)
    orig = dict(ln.split() for ln in (out / "utt2orig").read_text().splitlines())
    assert sorted(set(orig.values())) == sorted(utts)
    # The disk fills again: a redo fails and leaves the previous copies as they were.
    before = (out / "wav.scp").read_text()
    small_disk.fill()
    p = _run(repo_root, "steps/augment_data_dir.sh", "--nj", "2", "--config", conf, "--overwrite", "true",
             d, noise, out, ok=False)
    assert p.returncode != 0 and "previous outputs left as they were" in p.stderr, p.stderr
    assert (out / "wav.scp").read_text() == before and _leftovers(small_disk.path) == []
    assert all(Path(ln.split()[1]).is_file() for ln in before.splitlines())


@pytest.fixture
def tiny_model(tmp_path_factory):
    from pyxv.features.network_input import FeatureSource
    from pyxv.train.trainer import train_classifier

    root = tmp_path_factory.mktemp("model")
    u2s = make_datadir(root / "data", n_spk=4, n_utt=8)
    c = copy.deepcopy(TINY)
    c["train"]["epochs"] = 1
    src = FeatureSource(root / "data" / "feats.scp", vad_scp=root / "data" / "vad.scp", cmn_window=300)
    train_classifier(src, u2s, c, root / "exp", progress=False)
    return root / "exp" / "final.pt", root / "data", sorted(u2s)


def test_full_disk_extraction(repo_root, small_disk, tiny_model):
    model, data, utts = tiny_model
    ark = small_disk.path / "xvector.1.ark"
    small_disk.fill()
    p = _run(repo_root, PY, "-m", "pyxv.bin.extract_xvectors", "extract", model, data, ark, ok=False)
    text = p.stdout + p.stderr
    assert p.returncode != 0
    _says_disk_full(text, ark)
    assert sorted(x.name for x in small_disk.path.iterdir()) == ["filler"]
    (small_disk.path / "filler").unlink()
    _run(repo_root, PY, "-m", "pyxv.bin.extract_xvectors", "extract", model, data, ark)
    assert sorted(kaldiio.load_scp(str(ark.with_suffix(".scp")))) == utts


def test_full_disk_checkpoints(repo_root, tmp_path, small_disk):
    d = tmp_path / "data"
    make_datadir(d, n_spk=4, n_utt=8)
    conf = _tiny_conf(tmp_path / "x.yaml", epochs=1, steps_per_epoch=4)
    train = [PY, "-m", "pyxv.bin.train_xvector", "--use-gpu", "no", "--config", conf, d]
    out = small_disk.path / "exp"
    small_disk.fill()
    p = _run(repo_root, *train, out, ok=False)
    assert p.returncode != 0
    _says_disk_full(p.stdout + p.stderr, out)
    assert "Traceback" not in p.stderr and _leftovers(small_disk.path) == []
    (small_disk.path / "filler").unlink()
    small_disk.grow()
    _run(repo_root, *train, out)
    _assert_same_weights(out / "final.pt", _train_in_process(d, conf, tmp_path / "ref"))


# ------------------------------------------------------------------- the lock
def test_second_run_sh_in_the_same_directory_is_refused(repo_root, tmp_path):
    """run.sh with a path.sh that sleeps (the first run holds the lock meanwhile)."""
    sandbox = tmp_path / "recipe"
    (sandbox / "utils").mkdir(parents=True)
    shutil.copy2(repo_root / "run.sh", sandbox / "run.sh")
    shutil.copy2(repo_root / "utils" / "parse_options.sh", sandbox / "utils" / "parse_options.sh")
    shutil.copy2(repo_root / "utils" / "recipe_lib.sh", sandbox / "utils" / "recipe_lib.sh")
    (sandbox / "path.sh").write_text("sleep 30\n")
    (sandbox / "cmd.sh").write_text("")
    (sandbox / "conf").mkdir()
    for conf in set(re.findall(r"conf/[\w.]+", (repo_root / "run.sh").read_text())):   # run.sh checks they exist
        (sandbox / conf).write_text("")
    first = _start(sandbox, "bash", "run.sh", "--stage", "3", log=tmp_path / "first.log")
    try:
        t0 = time.time()
        while "pid" not in ((sandbox / "exp" / ".run.lock").read_text() if (sandbox / "exp" / ".run.lock").exists()
                            else "") and time.time() - t0 < 20:
            time.sleep(0.05)
        p = _run(sandbox, "bash", "run.sh", "--stage", "5", ok=False, timeout=30)
        assert p.returncode == 1
        assert f"another ./run.sh is running in {sandbox} (pid {first.pid}, stage 3" in p.stderr, p.stderr
        # --dry-run and --help are not blocked
        assert _run(sandbox, "bash", "run.sh", "--dry-run", "true", timeout=30).returncode == 0
    finally:
        _kill9(first)   # a crashed run: its lock goes with it
    p = subprocess.Popen(["bash", "run.sh", "--stage", "5"], cwd=sandbox, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(1.0)
    assert p.poll() is None          # not refused: it got the lock and sleeps in path.sh
    _kill9(p)
