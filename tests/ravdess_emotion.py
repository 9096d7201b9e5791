"""Real RAVDESS clips as a small emotion corpus, shared by the emotion-network
tests: the module-scoped ``corpus`` fixture (24 actors, 4 classes, 8 kHz MFCC +
VAD, 6 speaker-independent folds, random-init tiny x-vectors), the tiny network
configuration and a few-step pre-trained x-vector model. Import the fixture by
name in each test module that uses it: it is built once per module."""
import json

import kaldiio
import pytest
import torch

from pyxv.corpora.ravdess import EMOTIONS as EMO  # the recipe's four RAVDESS classes
from pyxv.datadir import write_datadir
from pyxv.emotion.config import load_emotion_config
from pyxv.emotion.data import discover_protocol, labeled_set

from emotion_synth import write_ravdess_folds

MFCC_8K = ("--sample-frequency=8000\n--frame-length=25\n--low-freq=20\n--high-freq=3700\n"
           "--num-ceps=23\n--snip-edges=false\n")
TINY = {"model": {"input_dim": 23, "channels": [4, 8], "blocks": [1, 1], "heads": 2, "embed_dim": 16,
                  "loss": "softmax"},
        "data": {"min_frames": 20, "min_utts_per_class": 1, "valid_per_class": 0, "chunk_min": 50,
                 "chunk_max": 80},
        "train": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 8, "warmup_steps": 1, "amp": "none"}}


@pytest.fixture(scope="module")
def corpus(ravdess_root, tmp_path_factory):
    """data/ravd/{all,fold1..6/{train,test}}: 4 classes, 2 clips per class and actor
    (normal intensity, statement 1, both repetitions), 8 kHz MFCC + VAD; fold k tests
    actors 4k-3..4k. Plus random-init tiny x-vectors in exp/xvector_clean."""
    from pyxv.extract import extract_embeddings, write_embeddings
    from pyxv.features.mfcc import Mfcc
    from pyxv.features.vad import VadOptions, compute_vad
    from pyxv.io import read_audio
    from pyxv.nnet.xvector import XVectorNet
    from pyxv.features.network_input import FeatureSource

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("emo")
    (root / "mfcc.conf").write_text(MFCC_8K)
    mfcc = Mfcc.from_conf(root / "mfcc.conf")
    vopt = VadOptions(vad_energy_threshold=5.5, vad_energy_mean_scale=0.5, vad_frames_context=2,
                      vad_proportion_threshold=0.12)
    u2s, u2e, wav, feats, vads = {}, {}, {}, {}, {}
    for a in range(1, 25):
        for code, emo in EMO.items():
            for rep in ("01", "02"):
                f = ravdess_root / f"Actor_{a:02d}" / f"03-01-{code}-01-01-{rep}-{a:02d}.flac"
                spk = f"a{a:02d}"
                utt = f"{spk}-{f.stem}"
                u2s[utt], u2e[utt], wav[utt] = spk, emo, str(f)
                x, _ = read_audio(str(f), sample_rate=8000)
                m = mfcc(x, dither=0.0)
                feats[utt], vads[utt] = m, compute_vad(m, vopt)
    emo_dir = root / "data" / "ravd"
    write_datadir(emo_dir / "all", utt2spk=u2s, wav_scp=wav, utt2emo=u2e)
    with kaldiio.WriteHelper(f"ark,scp:{emo_dir}/all/feats.ark,{emo_dir}/all/feats.scp") as w:
        for u in sorted(feats):
            w(u, feats[u])
    with kaldiio.WriteHelper(f"ark,scp:{emo_dir}/all/vad.ark,{emo_dir}/all/vad.scp") as w:
        for u in sorted(vads):
            w(u, vads[u])
    write_ravdess_folds(emo_dir, u2s, wav, u2e)
    # Random-init tiny x-vector network (seeded): x-vectors of every utterance.
    torch.manual_seed(0)
    net = XVectorNet.from_config(TINY, 20).eval()
    src = FeatureSource(emo_dir / "all" / "feats.scp", vad_scp=emo_dir / "all" / "vad.scp", cmn_window=300)
    xdir = root / "exp" / "xvector_clean" / "xvectors_ravd" / "all"
    xdir.mkdir(parents=True)
    write_embeddings(extract_embeddings(net, src, sorted(u2s)), xdir / "xvector.ark")
    return root, emo_dir


def emotion_config(root, **nnet):
    """The recipe's emotion config with the corpus's x-vector models and these ``nnet`` settings."""
    c = load_emotion_config(None, overrides={"xvector_models": {"clean": str(root / "exp" / "xvector_clean"),
                                                                "aug": str(root / "exp" / "xvector_aug")}})
    c["nnet"].update(nnet)
    return c


def write_emotion_yaml(tmp_path, root, **nnet):
    """Config files for ``train_emotion`` on the command line: the tiny network (arch.yaml)
    and emotion.yaml with the corpus's x-vector models and a 2-epoch schedule of the tiny
    network's chunks, ``nnet`` over it. Returns emotion.yaml's path."""
    import yaml

    arch = tmp_path / "arch.yaml"
    arch.write_text(json.dumps(TINY))
    conf = tmp_path / "emotion.yaml"
    conf.write_text(yaml.safe_dump({
        "xvector_models": {"clean": str(root / "exp" / "xvector_clean"), "aug": str(root / "exp" / "xvector_aug")},
        "nnet": {"architecture": str(arch), "epochs": 2, "batch_size": 8, "chunk_min": 50, "chunk_max": 80,
                 "dev_fraction": 0.0, **nnet}}))
    return conf


def pretrain_xvector(root, emo, name="xvector_clean", **model):
    """A tiny speaker x-vector trained for a few steps on fold1's training actors."""
    from pyxv.features.network_input import FeatureSource
    from pyxv.train.trainer import train_classifier

    cfg = json.loads(json.dumps(TINY))
    cfg["model"].update(model)
    sp = discover_protocol(emo)[0]
    tr = labeled_set(sp.train)
    src = FeatureSource(emo / "all" / "feats.scp", vad_scp=emo / "all" / "vad.scp", cmn_window=300)
    out = root / "exp" / name
    res = train_classifier(src, dict(zip(tr.utts, tr.spks)), cfg, out, valid_utts=[], progress=False)
    assert res.model.num_classes == 20
    return out / "final.pt"
