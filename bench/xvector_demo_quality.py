#!/usr/bin/env python3
"""Quality of the demo x-vector models on speakers NOT seen in training.

For each model (default exp/xvector_clean and exp/xvector_aug): the last
validation speaker accuracy of training (log/history.json, chance = 1/speakers),
and the cosine-scoring EER over all same-gender pairs of the emotion corpus's
utterances (data/demo/all: voices distinct from the pre-training speakers),
next to the EER of mean-MFCC vectors (raw MFCC averaged over voiced frames,
cosine) on the very same trials.

    python bench/xvector_demo_quality.py [--data data/demo/all] [--models exp/xvector_clean exp/xvector_aug]

Uses the stage-4 x-vectors (<model>/xvectors_<corpus>/all/xvector.scp) when
present, otherwise extracts them here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import kaldiio
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyxv.io import read_table  # noqa: E402
from pyxv.metrics.sv import eer  # noqa: E402


def cosine_trials(keys, vecs, utt2spk, utt2gender):
    """Target and non-target cosine scores of all same-gender pairs (i < j)."""
    x = np.asarray(vecs, dtype=np.float64)
    x = x - x.mean(0)                          # centre on the evaluation set (no back-end training)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    s = x @ x.T
    spk = np.array([utt2spk[k] for k in keys])
    gen = np.array([utt2gender.get(k, "u") for k in keys])
    iu = np.triu_indices(len(keys), 1)
    same_g = gen[iu[0]] == gen[iu[1]]
    tgt = spk[iu[0]] == spk[iu[1]]
    sc = s[iu]
    return sc[same_g & tgt], sc[same_g & ~tgt]


def mean_mfcc(data: Path, utts):
    feats, vad = read_table(data / "feats.scp"), read_table(data / "vad.scp")
    out = []
    for u in utts:
        x = kaldiio.load_mat(feats[u])
        v = kaldiio.load_mat(vad[u]).reshape(-1)[: len(x)] > 0.5
        out.append((x[v] if v.sum() > 0 else x).mean(0))
    return np.stack(out)


def xvectors(model: Path, data: Path):
    rel = data.relative_to("data") if not data.is_absolute() and data.parts[0] == "data" else Path(data.name)
    scp = model / f"xvectors_{rel.parent.as_posix()}" / rel.name / "xvector.scp"
    if scp.is_file():
        return dict(kaldiio.load_scp(str(scp))), str(scp)
    from pyxv.extract import extract_embeddings
    from pyxv.train.checkpoint import load_model
    from pyxv.features.network_input import FeatureSource

    net, ck = load_model(model / "final.pt")
    dc = ck["config"]["data"]
    src = FeatureSource(data / "feats.scp", vad_scp=data / "vad.scp", cmn_window=dc["cmn_window"])
    return dict(extract_embeddings(net, src, list(read_table(data / "feats.scp")))), "extracted here"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/demo/all")
    ap.add_argument("--models", nargs="+", default=["exp/xvector_clean", "exp/xvector_aug"])
    a = ap.parse_args()
    data = Path(a.data)
    utt2spk = read_table(data / "utt2spk")
    spk2g = read_table(data / "spk2gender") if (data / "spk2gender").is_file() else {}
    u2g = {u: spk2g.get(s, "u") for u, s in utt2spk.items()}
    for m in map(Path, a.models):
        if not (m / "final.pt").is_file():
            print(f"{m}: no final.pt, skipped")
            continue
        hist = json.loads((m / "log" / "history.json").read_text())
        import torch
        labels = torch.load(m / "final.pt", map_location="cpu", weights_only=True)["labels"]
        h = hist[-1]
        print(f"{m}: {len(labels)} training speakers, epoch {h['epoch']}: validation speaker accuracy "
              f"{h['valid_acc']:.3f} on {h.get('n_valid', '?')} held-out utterances (chance {1 / len(labels):.3f})")
        xv, where = xvectors(m, data)
        keys = sorted(k for k in xv if k in utt2spk)
        tar, non = cosine_trials(keys, [xv[k] for k in keys], utt2spk, u2g)
        e_xv = eer(tar, non)
        mm = mean_mfcc(data, keys)
        tar2, non2 = cosine_trials(keys, mm, utt2spk, u2g)
        e_mm = eer(tar2, non2)
        print(f"  {data} ({len(set(utt2spk[k] for k in keys))} unseen speakers, {len(tar)} target / {len(non)} "
              f"non-target same-gender trials; x-vectors {where}):")
        print(f"  cosine EER: x-vector {100 * e_xv:.2f}%   mean-MFCC {100 * e_mm:.2f}%")


if __name__ == "__main__":
    main()
