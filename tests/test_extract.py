"""x-vector extraction: equals a direct forward pass, chunking of long
utterances, ark/scp readable by kaldiio, speaker means, bad input."""
from __future__ import annotations

import copy
import os
import subprocess

import kaldiio
import numpy as np
import pytest
import torch

from pyxv.extract import embed_matrices, extract_embeddings, utterance_posteriors
from pyxv.features import prepare_xvector_input
from pyxv.io import read_table
from pyxv.nnet.config import validate_config
from pyxv.nnet.xvector import XVectorNet
from pyxv.train import checkpoint as ckpt
from pyxv.features.network_input import FeatureSource

from xvector_synth import TINY, make_datadir

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext")
    d = root / "data"
    u2s = make_datadir(d, n_spk=3, n_utt=4, frames=(60, 260), seed=5)
    # one utterance with no voiced frame (falls back to all frames), one without VAD
    feats = read_table(d / "feats.scp")
    with kaldiio.WriteHelper(f"ark,scp:{root}/extra.ark,{root}/extra.scp") as w:
        w("spk0-novoice", np.zeros(len(kaldiio.load_mat(feats["spk0-utt00"])), dtype=np.float32))
    with open(d / "vad.scp", "a") as f:
        f.write(open(root / "extra.scp").read())
    with open(d / "feats.scp", "a") as f:
        f.write(f"spk0-novoice {feats['spk0-utt00']}\n")
        f.write(f"spk1-novad {feats['spk1-utt00']}\n")
    with open(d / "utt2spk", "a") as f:
        f.write("spk0-novoice spk0\nspk1-novad spk1\n")
    for name in ("feats.scp", "vad.scp", "utt2spk"):
        lines = sorted(open(d / name).read().splitlines())
        open(d / name, "w").write("\n".join(lines) + "\n")
    cfg = validate_config(copy.deepcopy(TINY))
    torch.manual_seed(0)
    net = XVectorNet.from_config(cfg, 3)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    exp = root / "exp"
    ckpt.save(ckpt.model_file(net, cfg, ["spk0", "spk1", "spk2"]), exp / "final.pt")
    return exp, d, net.eval(), cfg


def direct(net, x, chunk_frames):
    """Reference: each chunk through net.embed alone, averaged."""
    n = -(-len(x) // chunk_frames)
    edges = np.linspace(0, len(x), n + 1).round().astype(int)
    with torch.no_grad():
        embs = [net.embed(torch.from_numpy(np.array(x[a:b]))[None])[0].numpy() for a, b in zip(edges[:-1], edges[1:])]
    return np.mean(embs, 0)


def test_step_script_outputs_equal_direct_forward(model_and_data, repo_root):
    exp, d, net, cfg = model_and_data
    out = exp / "xvectors_data"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(["steps/extract_xvectors.sh", "--nj", "2", "--cmd", "utils/parallel/run.py",
                        str(exp), str(d), str(out)], cwd=repo_root, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 utterances failed" in p.stderr                           # spk1-novad: reported, skipped
    logs = "".join(open(out / "log" / f"extract.{j}.log").read() for j in (1, 2))
    assert "spk1-novad" in logs and "spk0-novoice: only 0 voiced frames" in logs
    xv = dict(kaldiio.load_scp(str(out / "xvector.scp")))
    feats, vad = read_table(d / "feats.scp"), read_table(d / "vad.scp")
    assert sorted(xv) == sorted(u for u in feats if u != "spk1-novad")
    assert list(read_table(out / "xvector.scp")) == sorted(xv)
    assert {v.shape for v in xv.values()} == {(16,)}
    long_seen = 0
    for u, v in xv.items():
        raw = kaldiio.load_mat(feats[u])
        x = prepare_xvector_input(raw, kaldiio.load_mat(vad[u]))
        if len(x) < cfg["extract"]["min_frames"]:
            x = prepare_xvector_input(raw, np.ones(len(raw)))
        long_seen += len(x) > cfg["extract"]["chunk_frames"]
        np.testing.assert_allclose(v, direct(net, x, cfg["extract"]["chunk_frames"]), rtol=1e-4, atol=1e-5)
    assert long_seen >= 3                                              # chunked utterances were checked
    # speaker means and counts (Kaldi's ivector-mean outputs)
    spk = dict(kaldiio.load_scp(str(out / "spk_xvector.scp")))
    counts = {k: int(v) for k, v in read_table(out / "num_utts.ark").items()}
    u2s = read_table(d / "utt2spk")
    for s, m in spk.items():
        us = [u for u in xv if u2s[u] == s]
        assert counts[s] == len(us)
        np.testing.assert_allclose(m, np.mean([xv[u] for u in us], 0), rtol=1e-5, atol=1e-6)
    # a second call sees up-to-date outputs and does nothing
    p = subprocess.run(["steps/extract_xvectors.sh", str(exp), str(d), str(out)], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "nothing to do" in p.stdout


def test_equal_length_batches_are_pad_free(model_and_data):
    _, _, net, _ = model_and_data
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(n, 23)).astype(np.float32) for n in (70, 70, 70, 90, 250)]
    e = embed_matrices(net, mats, chunk_frames=100, batch_frames=10_000)
    for m, v in zip(mats, e):
        np.testing.assert_allclose(v, direct(net, m, 100), rtol=1e-4, atol=1e-5)


def test_posteriors_and_bad_checkpoint(model_and_data, tmp_path):
    exp, d, _, _ = model_and_data
    net, ck = ckpt.load_model(exp / "final.pt")
    src = FeatureSource(d / "feats.scp", vad_scp=d / "vad.scp", cmn_window=300)
    keys, post = utterance_posteriors(net, src, ["spk0-utt00", "spk2-utt01"])
    assert keys == ["spk0-utt00", "spk2-utt01"] and post.shape == (2, 3)
    np.testing.assert_allclose(post.sum(1), 1.0, rtol=1e-5)
    stats = {}
    got = list(extract_embeddings(net, src, ["spk1-novad", "spk0-utt01"], stats=stats))
    assert [u for u, _ in got] == ["spk0-utt01"] and stats == {"done": 1, "failed": 1}
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a pyxv x-vector checkpoint"):
        ckpt.load_model(tmp_path / "x.pt")
