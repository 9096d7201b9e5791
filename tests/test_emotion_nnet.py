"""Emotion systems on real RAVDESS clips (6 speaker-independent folds) with tiny networks:
frozen x-vector + LR on every fold, fine-tuning a pre-trained model, random-init
networks, and the bad-input errors."""
import json
import logging

import kaldiio
import numpy as np
import pytest
import torch

from pyxv.emotion import systems
from pyxv.emotion.config import load_emotion_config
from pyxv.emotion.data import discover_protocol, labeled_set
from pyxv.emotion.nnet import FeatureMismatchError

from ravdess_emotion import MFCC_8K, TINY, emotion_config, pretrain_xvector, write_emotion_yaml
from ravdess_emotion import corpus  # noqa: F401  (the module's fixture: RAVDESS clips in 6 folds, MFCC + VAD)


def test_lr_on_ravdess_xvectors_every_fold(corpus):
    root, emo = corpus
    out = root / "exp" / "emotion" / "ravd"
    cfg = emotion_config(root)
    splits = discover_protocol(emo)
    assert [s.name for s in splits] == [f"fold{k}" for k in range(1, 7)]
    for k, sp in enumerate(splits, 1):
        systems.run_fold("frozen_lr_clean", "clean", emo, k, out, cfg)
        d = out / "frozen_lr_clean_clean" / sp.name
        assert (d / "model.json").is_file() and (d / "model.npz").is_file() and (d / "metrics.json").is_file()
        preds = [l.split() for l in (d / "predictions.txt").read_text().splitlines()]
        assert len(preds) == 32
        # The fold's test speakers never appear in its training data.
        test_spk = {u.split("-")[0] for u, _, _ in preds}
        assert test_spk == {f"a{a:02d}" for a in range(4 * k - 3, 4 * k + 1)}
        assert not test_spk & labeled_set(sp.train).speakers
    s = systems.summarize("frozen_lr_clean", "clean", emo, out)
    assert sorted(s["folds"]) == [f"fold{k}" for k in range(1, 7)] and s["pooled"]["n_test"] == 192
    assert s["pooled"]["labels"] == ["angry", "happy", "neutral", "sad"]
    # the files agree: fold metrics recomputed from predictions.txt equal metrics.json
    from pyxv.metrics.classification import classification_metrics
    for sp in splits:
        d = out / "frozen_lr_clean_clean" / sp.name
        preds = systems.read_predictions(d / "predictions.txt")
        again = classification_metrics([t for _, t, _ in preds], [p for _, _, p in preds],
                                       labels=["angry", "happy", "neutral", "sad"])
        saved = json.loads((d / "metrics.json").read_text())
        assert saved["weighted_f1"] == pytest.approx(again["weighted_f1"]) and saved["confusion"] == again["confusion"]


def test_finetune_replaces_speaker_layer_and_starts_from_pretrained(corpus):
    from pyxv.train import checkpoint as ckpt

    root, emo = corpus
    pre = pretrain_xvector(root, emo)
    # pretrained_lr_mult 0: the pre-trained layers must come out exactly as loaded
    cfg = emotion_config(root, epochs=1, steps_per_epoch=2, batch_size=8, chunk_min=50, chunk_max=80,
               pretrained_lr_mult=0.0, patience=1)
    m = systems.run_fold("finetune_clean", "clean", emo, 1, root / "exp" / "emotion" / "ravd", cfg)
    assert m["n_test"] == 32
    d = root / "exp" / "emotion" / "ravd" / "finetune_clean_clean" / "fold1"
    net, ck = ckpt.load_model(d / "final.pt")
    pnet, pck = ckpt.load_model(pre)
    assert ck["labels"] == ["angry", "happy", "neutral", "sad"] and net.num_classes == 4
    assert pnet.num_classes == 20 and net.head.weight.shape == (4, 16)     # speaker layer gone
    assert ck["extra"]["emotion_system"] == "finetune_clean"
    p0 = dict(pnet.named_parameters())
    for n, p in net.named_parameters():
        if not n.startswith("head."):
            assert torch.equal(p, p0[n]), n
    assert (d / "predictions.txt").is_file() and (d / "log" / "history.json").is_file()
    # with the normal lr multiplier the body moves, but starts from the pre-trained weights
    cfg["nnet"]["pretrained_lr_mult"] = 0.1
    systems.run_fold("finetune_clean", "clean", emo, 1, root / "exp" / "emotion" / "ravd2", cfg)
    net2, _ = ckpt.load_model(root / "exp" / "emotion" / "ravd2" / "finetune_clean_clean" / "fold1" / "final.pt")
    w, w0 = net2.trunk.conv1.weight, p0["trunk.conv1.weight"]
    torch.manual_seed(123)
    fresh = type(pnet).from_config(TINY, 4).trunk.conv1.weight
    assert (w - w0).norm() < 0.2 * (fresh - w0).norm()


def test_pretrained_model_with_other_features_is_refused(corpus):
    from pyxv.nnet.config import validate_config
    from pyxv.nnet.xvector import XVectorNet
    from pyxv.train import checkpoint as ckpt

    root, emo = corpus
    c = validate_config(TINY)
    c["model"]["input_dim"] = 20          # e.g. a model trained on 20-dim MFCC
    ckpt.save(ckpt.model_file(XVectorNet.from_config(c, 5), c, list("abcde")), root / "exp" / "xvector_aug" / "final.pt")
    cfg = emotion_config(root, epochs=1, steps_per_epoch=1)
    with pytest.raises(FeatureMismatchError, match=r"xvector_aug/final.pt takes 20-dim .* has 23-dim"):
        systems.run_fold("finetune_aug", "clean", emo, 2, root / "exp" / "emotion" / "ravd", cfg)
    # same dims, other MFCC config (16 kHz model, 8 kHz data): an error naming both configs
    c["model"]["input_dim"] = 23
    ckpt.save(ckpt.model_file(XVectorNet.from_config(c, 5), c, list("abcde"),
                              extra={"mfcc.conf": MFCC_8K.replace("8000", "16000")}),
              root / "exp" / "xvector_aug" / "final.pt")
    (emo / "all" / "conf").mkdir(exist_ok=True)
    (emo / "all" / "conf" / "mfcc.conf").write_text(MFCC_8K)
    try:
        with pytest.raises(FeatureMismatchError, match=r"sample-frequency=16000.*all/conf/mfcc.conf.*sample-frequency=8000"):
            systems.run_fold("finetune_aug", "clean", emo, 2, root / "exp" / "emotion" / "ravd", cfg)
    finally:
        (emo / "all" / "conf" / "mfcc.conf").unlink()


def test_randinit_mfcc_and_gemaps_run(corpus, caplog):
    root, emo = corpus
    arch = root / "arch.yaml"
    arch.write_text(json.dumps(TINY))
    cfg = emotion_config(root, architecture=str(arch), epochs=2, steps_per_epoch=2, batch_size=8, chunk_min=50, chunk_max=80,
               dev_fraction=0.15)
    with caplog.at_level(logging.INFO, logger="pyxv.emotion"):
        m = systems.run_fold("randinit_mfcc", "clean", emo, 3, root / "exp" / "emotion" / "ravd", cfg)
    assert m["n_test"] == 32
    assert any("carved out as dev" in r.message for r in caplog.records)   # no dev in these folds
    cfg["nnet"]["dev_fraction"] = 0.0
    # GeMAPS LLD input (T x 25): plumbing with stand-in matrices (openSMILE is covered by the features' tests)
    rng = np.random.default_rng(0)
    with kaldiio.WriteHelper(f"ark,scp:{emo}/all/gemaps_lld.ark,{emo}/all/gemaps_lld.scp") as w:
        for u in sorted(labeled_set(emo / "all").utts):
            w(u, (rng.normal(size=(150, 25)) * 50 + 100).astype(np.float32))
    m = systems.run_fold("randinit_gemaps", "clean", emo, 4, root / "exp" / "emotion" / "ravd", cfg)
    d = root / "exp" / "emotion" / "ravd" / "randinit_gemaps_clean" / "fold4"
    from pyxv.train import checkpoint as ckpt
    net, ck = ckpt.load_model(d / "final.pt")
    assert net.input_dim == 25 and ck["extra"]["features"] == "gemaps" and len(ck["extra"]["gemaps_mean"]) == 25
    assert m["n_test"] == 32


def test_clean_epoch_size_keeps_clean_aug_as_long_as_clean():
    """nnet.epoch_size 'clean': an epoch of clean+aug training has the clean set's steps
    (one pass over the clean frames in chunks); 'all' would count the copies too."""
    from types import SimpleNamespace

    from pyxv.config import ConfigError
    from pyxv.emotion.data import LabeledSet
    from pyxv.emotion.nnet import clean_epoch_steps
    from pyxv.train.data import default_steps

    train, lengths = LabeledSet(), {}
    for i in range(40):
        u = f"s{i % 4}-u{i}"
        train.add(u, "happy", f"s{i % 4}")
        train.add(f"{u}-noise", "happy", f"s{i % 4}", u, True)
        lengths[u], lengths[f"{u}-noise"] = 300 + 7 * i, 300 + 7 * i
    n = {"batch_size": 8, "chunk_min": 100, "chunk_max": 200}
    steps = clean_epoch_steps(train, SimpleNamespace(lengths=lengths), n)
    clean_total = sum(300 + 7 * i for i in range(40))
    assert steps == default_steps([clean_total], 8, 100, 200) == round(clean_total / 150 / 8)
    assert default_steps(lengths.values(), 8, 100, 200) == round(2 * clean_total / 150 / 8)  # what 'all' trains
    with pytest.raises(ConfigError, match="epoch_size: 'half'"):
        load_emotion_config(None, overrides={"nnet": {"epoch_size": "half"}})


def test_a_job_of_several_folds_gives_what_one_job_per_fold_gives(corpus, tmp_path):
    """steps/train_emotion.sh --nj N: job k runs folds k, k+N, ... in one process.
    A fold's posteriors do not depend on the folds before it in the process, each
    fold keeps its own log, and a failing fold does not cost the job's others."""
    import shutil
    import subprocess
    import sys

    root, emo = corpus
    conf = write_emotion_yaml(tmp_path, root, steps_per_epoch=2)

    def job(system, emo_dir, out, *fold):
        return subprocess.run([sys.executable, "-m", "pyxv.bin.train_emotion", "--config", str(conf), "--system",
                               system, "--fold", *fold, str(emo_dir), str(out)], capture_output=True, text=True,
                              timeout=300)

    r = job("randinit_mfcc", emo, tmp_path / "a", "1", "--nj", "3")          # folds 1 and 4
    assert r.returncode == 0, r.stderr
    r = job("randinit_mfcc", emo, tmp_path / "b", "4")
    assert r.returncode == 0, r.stderr
    a, b = tmp_path / "a" / "randinit_mfcc_clean", tmp_path / "b" / "randinit_mfcc_clean"
    assert sorted(p.name for p in a.iterdir()) == ["fold1", "fold4"]
    assert (a / "fold4" / "posteriors").read_bytes() == (b / "fold4" / "posteriors").read_bytes()
    log1 = (a / "fold1" / "log" / "train.log").read_text()
    assert "randinit_mfcc clean fold1: weighted F1" in log1 and "fold4" not in log1
    assert "epoch 2 done" in log1                                           # the trainer's lines too
    assert "randinit_mfcc clean fold4: weighted F1" in (a / "fold4" / "log" / "train.log").read_text()

    # fold 1's test data names an emotion outside the classes: fold 4 still finishes
    bad = tmp_path / "data" / emo.name          # the same x-vector dir (xvectors_<name>)
    shutil.copytree(emo, bad)
    u2e = bad / "fold1" / "test" / "utt2emo"
    lines = u2e.read_text().splitlines()
    u2e.write_text("\n".join([lines[0].split()[0] + " bored"] + lines[1:]) + "\n")
    r = job("frozen_lr_clean", bad, tmp_path / "c", "1", "--nj", "3")
    assert r.returncode == 1
    assert "fold(s) 1 of 1 4 failed" in r.stderr and "bored" in r.stderr
    assert (tmp_path / "c" / "frozen_lr_clean_clean" / "fold4" / "metrics.json").is_file()
    assert not (tmp_path / "c" / "frozen_lr_clean_clean" / "fold1" / "metrics.json").exists()
    r = job("frozen_lr_clean", bad, tmp_path / "c", "4", "--nj", "3")
    assert r.returncode == 2 and "job number must be in 1..3" in r.stderr


@pytest.mark.parametrize("kw,want", [({}, False), ({"use_gpu": False}, False), ({"use_gpu": True}, True)])
def test_run_fold_trains_the_networks_on_a_gpu_only_when_asked(corpus, tmp_path, monkeypatch, kw, want):
    """run_fold(use_gpu=) reaches the trainer (CPU by default: never the trainer's own
    choice of a visible GPU); the dev metric and test posteriors follow the network
    onto that device (tests/test_device.py)."""
    import pyxv.train.trainer as trainer

    class Stop(Exception):
        pass

    got = {}

    def fake_train(*a, **k):
        got.update(k)
        raise Stop   # the call is what is checked; no training

    monkeypatch.setattr(trainer, "train_classifier", fake_train)
    root, emo = corpus
    arch = tmp_path / "arch.yaml"
    arch.write_text(json.dumps(TINY))
    with pytest.raises(Stop):
        systems.run_fold("randinit_mfcc", "clean", emo, 2, tmp_path / "out",
                         emotion_config(root, architecture=str(arch), dev_fraction=0.15), **kw)
    assert got["use_gpu"] is want and callable(got["dev"])
