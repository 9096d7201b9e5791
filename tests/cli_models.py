"""Tiny models trained on real RAVDESS clips, as the recipe saves them, for the
tests of ``pyxv emotion|verify|embed|export``: the module-scoped ``setup``
fixture (an x-vector network with a cosine back-end, frozen x-vectors + LR, a
fine-tuned network and a random-init GeMAPS network), the clip lists it uses,
and ``run_cli``. Import the fixture by name in each test module that uses it:
it is trained once per module."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pyxv.cli import main as cli
from pyxv.corpora.ravdess import EMOTIONS as EMO  # the recipe's four RAVDESS classes

TINY = {
    "model": {"input_dim": 23, "channels": [4, 8, 8, 8], "blocks": [1, 1, 1, 1], "heads": 2, "embed_dim": 16,
              "loss": "softmax"},
    "data": {"min_frames": 50, "min_utts_per_class": 2, "valid_per_class": 0, "chunk_min": 80, "chunk_max": 120},
    "train": {"epochs": 2, "steps_per_epoch": 8, "batch_size": 8, "lr": 0.01, "warmup_steps": 2, "amp": "none",
              "log_interval": 100, "keep_checkpoints": 1},
    "extract": {"chunk_frames": 1000, "min_frames": 10},
}


def clips(root: Path, actors, per_emotion=2):
    """[(utt, path, speaker, emotion)] of RAVDESS speech clips (statement 01, normal intensity first)."""
    out = []
    for a in actors:
        d = root / f"Actor_{a:02d}"
        for code, emo in EMO.items():
            files = sorted(d.glob(f"03-01-{code}-*-*-*-{a:02d}.flac"))[:per_emotion]
            for f in files:
                spk = f"actor{a:02d}"
                out.append((f"{spk}-{f.stem}", str(f), spk, emo))
    return out


@pytest.fixture(scope="module")
def setup(ravdess_root, tmp_path_factory, repo_root):
    import kaldiio
    import torch

    from pyxv.backend.pipeline import Backend
    from pyxv.emotion.lr import EmotionLR, save_lr_model
    from pyxv.features.frontend import MfccVadFrontEnd as FrontEnd
    from pyxv.inference import XVectorModel
    from pyxv.train import checkpoint as ckpt
    from pyxv.features.network_input import FeatureSource
    from pyxv.train.trainer import train_classifier

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli")
    exp = root / "exp"
    xdir = exp / "xvector_tiny"
    xdir.mkdir(parents=True)
    shutil.copy(repo_root / "conf/mfcc_8k.conf", xdir / "mfcc.conf")
    shutil.copy(repo_root / "conf/vad.conf", xdir / "vad.conf")
    train = clips(ravdess_root, range(1, 7))
    front = FrontEnd(xdir / "mfcc.conf", xdir / "vad.conf")
    fdir = root / "feats"
    fdir.mkdir()
    with kaldiio.WriteHelper(f"ark,scp:{fdir}/feats.ark,{fdir}/feats.scp") as wf, \
            kaldiio.WriteHelper(f"ark,scp:{fdir}/vad.ark,{fdir}/vad.scp") as wv:
        for utt, path, _, _ in train:
            m, v = front.raw(path, utt)
            wf(utt, m)
            wv(utt, v)
    src = FeatureSource(fdir / "feats.scp", vad_scp=fdir / "vad.scp", cmn_window=300)
    u2s = {u: s for u, _, s, _ in train}
    train_classifier(src, u2s, TINY, xdir, progress=False,
                     extra={"mfcc.conf": (xdir / "mfcc.conf").read_text(), "vad.conf": (xdir / "vad.conf").read_text()})
    xv = XVectorModel(xdir)
    X = np.stack([xv.embed_file(p, u) for u, p, _, _ in train])
    spk = np.array([s for _, _, s, _ in train])
    emo = [e for _, _, _, e in train]
    be = Backend.from_config(None, "cosine").fit(X, spk)
    be.save(exp / "sv/ravdess/xvector_tiny/cosine/backend.json")
    # Frozen x-vectors + LR, saved as stage 5 saves it (path relative to the recipe root).
    lr = EmotionLR(["angry", "happy", "neutral", "sad"], C=1.0).fit(X, emo)
    lr_dir = exp / "emotion/ravdess/frozen_lr_tiny_clean/fold1"
    lr_dir.mkdir(parents=True)
    save_lr_model(lr_dir, lr, {"type": "frozen_lr", "classes": lr.classes, "xvector_model": "exp/xvector_tiny"})
    # A fine-tuned network as stage 5 saves it: final.pt with an emotion head, features in extra.
    ft_dir = exp / "emotion/ravdess/finetune_tiny_clean/fold1"
    cfg = dict(TINY, train=dict(TINY["train"], epochs=1))
    extra = {"emotion_system": "finetune_tiny", "features": "mfcc", "classes": ["angry", "happy", "neutral", "sad"],
             "cmn_window": 300, "apply_vad": True, "architecture_from": str(xdir / "final.pt"),
             "mfcc.conf": (xdir / "mfcc.conf").read_text(), "vad.conf": (xdir / "vad.conf").read_text()}
    train_classifier(src, {u: e for u, _, _, e in train}, cfg, ft_dir, labels=extra["classes"],
                     init_from=xdir / "final.pt", extra=extra, progress=False)
    # A random-init GeMAPS network (25 LLDs per frame, standardised).
    from pyxv.nnet.xvector import XVectorNet

    gcfg = dict(TINY, model=dict(TINY["model"], input_dim=25))
    net = XVectorNet.from_config(gcfg, 4)
    g_dir = exp / "emotion/ravdess/randinit_gemaps_clean/fold1"
    from pyxv.nnet.config import validate_config

    ckpt.save(ckpt.model_file(net, validate_config(gcfg), extra["classes"],
                              {"emotion_system": "randinit_gemaps", "features": "gemaps",
                               "classes": extra["classes"], "gemaps_mean": [0.0] * 25, "gemaps_std": [1.0] * 25}),
              g_dir / "final.pt")
    other = clips(ravdess_root, [9, 10], per_emotion=1)
    return dict(root=root, exp=exp, xdir=xdir, train=train, test=other, lr_dir=lr_dir, ft_dir=ft_dir, g_dir=g_dir,
                X=X, xv=xv)


def run_cli(args, capsys):
    rc = cli([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err
