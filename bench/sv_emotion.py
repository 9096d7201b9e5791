#!/usr/bin/env python3
"""Benchmark: speaker verification across emotions, compensated back-ends side by side.

  python bench/sv_emotion.py --data data/ravdess --xvectors exp/xvector_ge2e/xvectors_ravdess/all/xvector.scp
  python bench/sv_emotion.py --data data/ravdess --resemblyzer [--cache /tmp/ge2e_ravdess.npz]

Protocol (``pyxv.sv.folds``): the corpus's speaker-disjoint folds (RAVDESS: 6
folds of 4 actors, made by ``./run.sh --stage 0 --stop-stage 0 --corpus ravdess``);
every back-end piece is fitted on the fold's training speakers only; trials are
all same-gender pairs of the fold's test speakers; the tables pool the folds.

Printed per back-end, on the same trials: overall EER, same- and cross-emotion
EER (pooled trials, as the issue's reference figures; and the mean of the
cells), their ratio, minDCF(0.01), Cllr, min Cllr and actual DCF(0.01), then
the issue's targets against plain cosine.

Embeddings: ``--xvectors`` reads any Kaldi x-vector scp (the recipe's encoder);
``--resemblyzer`` computes GE2E vectors with Resemblyzer's own code (a test-only
dependency: ``pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels librosa``).
Trial-side emotions for the emotion-aware pieces come from labels, or with
``--emotion-posteriors DIR`` from stage 5 (``DIR/<fold>/posteriors``), or with
``--emotion-lr`` from a logistic regression on the same embeddings trained per
fold on the training speakers (``pyxv.emotion.lr.EmotionLR``).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

# name -> (kind, overrides of conf/sv.yaml, emotions of trial sides: "labels" | "posteriors")
ESN = {"enabled": True, "emotion_aware": True, "top_k": 50}
METHODS = {
    "cosine": ("cosine", {"cosine": {"center": False}}),
    "cosine (centred)": ("cosine", {}),
    "PLDA (emotional training data)": ("plda", {}),
    "emotion NAP (dim chosen on held-out speakers)": ("cosine", {"nap": {"enabled": True}}),
    "emotion NAP (8 dims)": ("cosine", {"nap": {"enabled": True, "dim": 8}}),
    "S-norm (plain)": ("cosine", {"asnorm": {"enabled": True, "top_k": 50}}),
    "emotion-aware S-norm": ("cosine", {"asnorm": ESN}),
    "calibration": ("cosine", {"calibration": {"enabled": True}}),
    "calibration by emotion pair": ("cosine", {"calibration": {"enabled": True, "by_emotion": True}}),
    "NAP 8 + PLDA": ("plda", {"nap": {"enabled": True, "dim": 8}}),
    "NAP 8 + emotion S-norm + calibration by emotion pair": (
        "cosine", {"nap": {"enabled": True, "dim": 8}, "asnorm": ESN,
                   "calibration": {"enabled": True, "by_emotion": True}}),
    "best: conf/sv_emotion.yaml (NAP 8 + emotion S-norm + calibration)": ("cosine", "conf/sv_emotion.yaml"),
}


def merge_cfg(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = {**(out.get(k) or {}), **v} if isinstance(v, dict) else v
    return out


def resemblyzer_vectors(wav_scp: Path, cache: Path | None) -> tuple[list[str], np.ndarray]:
    """GE2E embeddings (N, 256) of every utterance of wav.scp, by Resemblyzer's own code (cached)."""
    from pyxv.io import read_audio, read_table

    scp = read_table(wav_scp)
    utts = sorted(scp)
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if list(z["utts"]) == utts:
            print(f"GE2E vectors from the cache {cache}")
            return utts, z["X"]
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as e:
        raise SystemExit(f"--resemblyzer needs Resemblyzer ({e}); install it with "
                         "'pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels librosa' or use --xvectors")
    enc = VoiceEncoder("cpu", verbose=False)
    t0 = time.time()
    X = []
    for i, u in enumerate(utts):
        x, sr = read_audio(scp[u], name=u)
        X.append(enc.embed_utterance(preprocess_wav(x / 32768.0, source_sr=sr)))
        if i % 200 == 0:
            print(f"  GE2E {i}/{len(utts)} clips, {time.time() - t0:.0f} s", flush=True)
    X = np.stack(X).astype(np.float32)
    if cache is not None:
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, utts=np.array(utts), X=X)
        os.replace(tmp, cache)
    return utts, X


def read_scp_vectors(path: str) -> tuple[list[str], np.ndarray]:
    from pyxv.sv.run import read_xvectors

    p = Path(path)
    utts, X, bad = read_xvectors(p.parent if p.name == "xvector.scp" else p)
    if bad:
        print(f"{bad} bad x-vectors skipped")
    return utts, X


def emotion_lr_posteriors(X, utts, splits, labels, out_dir: Path) -> Path:
    """Stage-5-style posteriors per fold from EmotionLR trained on the fold's training speakers only."""
    from pyxv.emotion.lr import EmotionLR
    from pyxv.io import read_table
    from pyxv.metrics.classification import weighted_f1

    pos = {u: i for i, u in enumerate(utts)}
    u2s, u2e = labels["utt2spk"], labels["utt2emo"]
    classes = sorted({u2e[u] for u in utts if u in u2e})
    truth, pred = [], []
    for sp in splits:
        tr = [u for u in read_table(sp.train / "utt2spk") if u in pos and u in u2e]
        te = [u for u in read_table(sp.test / "utt2spk") if u in pos and u in u2e]
        assert not {u2s[u] for u in tr} & {u2s[u] for u in te}, sp.name
        lr = EmotionLR(classes, pre={"projection": "whiten"}).fit(X[[pos[u] for u in tr]], [u2e[u] for u in tr],
                                                                  groups=[u2s[u] for u in tr])
        P = lr.predict_proba(X[[pos[u] for u in te]])
        d = out_dir / sp.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "classes.txt").write_text("\n".join(classes) + "\n")
        (d / "posteriors").write_text("".join(u + " " + " ".join(f"{p:.6f}" for p in row) + "\n"
                                              for u, row in zip(te, P)))
        truth += [u2e[u] for u in te]
        pred += [classes[i] for i in P.argmax(1)]
    print(f"emotion LR on the embeddings (per fold, training speakers only): weighted F1 "
          f"{100 * weighted_f1(truth, pred):.1f} % over {len(truth)} test clips")
    return out_dir


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/ravdess", help="corpus data dir with all/ and fold<k>/{train,test}")
    p.add_argument("--xvectors", default="", help="Kaldi x-vector scp of the corpus's utterances")
    p.add_argument("--resemblyzer", action="store_true", help="GE2E vectors from Resemblyzer's own code")
    p.add_argument("--cache", default="", help="npz cache of the --resemblyzer vectors")
    p.add_argument("--config", default="conf/sv.yaml", help="base back-end settings")
    p.add_argument("--emotion-posteriors", default="", help="stage-5 emotion system dir (<dir>/<fold>/posteriors)")
    p.add_argument("--emotion-lr", action="store_true",
                   help="trial-side emotions from an emotion LR on the same embeddings (per fold)")
    p.add_argument("--methods", default="", help="comma-separated subset of: " + ", ".join(METHODS))
    p.add_argument("--json", default="", help="also write the figures here")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pyxv.backend import Backend
    from pyxv.emotion.data import discover_protocol
    from pyxv.io import read_table
    from pyxv.sv.cells import table_summary
    from pyxv.sv.config import load_sv_config, validate_sv_config
    from pyxv.sv.folds import score_folds

    if bool(a.xvectors) == a.resemblyzer:
        p.error("give exactly one of --xvectors and --resemblyzer")
    data = Path(a.data)
    if a.resemblyzer:
        utts, X = resemblyzer_vectors(data / "all" / "wav.scp", Path(a.cache) if a.cache else None)
        source = "GE2E (Resemblyzer 0.1.4's own code)"
    else:
        utts, X = read_scp_vectors(a.xvectors)
        source = a.xvectors
    labels = {k: read_table(data / "all" / k) for k in ("utt2spk", "utt2emo", "spk2gender")}
    splits = discover_protocol(data)
    base = load_sv_config(a.config or None)
    print(f"{source}: {X.shape[0]} vectors of dim {X.shape[1]}; {len(splits)} folds of {data}; "
          f"load {open('/proc/loadavg').read().split()[0]}")
    post_dir, tmp = None, None
    if a.emotion_posteriors:
        post_dir = Path(a.emotion_posteriors)
    elif a.emotion_lr:
        tmp = tempfile.TemporaryDirectory()
        post_dir = emotion_lr_posteriors(X, utts, splits, labels, Path(tmp.name))
    names = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else list(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}")
    rows = []
    runs = [(m, None) for m in names]
    if post_dir is not None:
        runs += [(m, post_dir) for m in names if isinstance(METHODS[m][1], str)
                 or METHODS[m][1].get("asnorm", {}).get("emotion_aware")
                 or METHODS[m][1].get("calibration", {}).get("by_emotion")]
    for name, pdir in runs:
        kind, over = METHODS[name]
        cfg = load_sv_config(REPO / over) if isinstance(over, str) else validate_sv_config(merge_cfg(base, over))
        t0 = time.time()
        table, infos = score_folds(X, utts, splits, lambda: Backend.from_config(cfg, kind), labels,
                                   posteriors_dir=pdir)
        s = table_summary(table, calibration=True)
        c = s["calibration"]
        label = name + (" [trial emotions: recogniser posteriors]" if pdir is not None else "")
        naps = sorted({i["backend"].get("nap_dim") for i in infos if "nap_dim" in i["backend"]})
        rows.append({"method": label, "eer": s["overall"].eer, "same": s["same_emotion_pooled_eer"],
                     "cross": s["cross_emotion_pooled_eer"], "same_cells": s["same_emotion_mean_eer"],
                     "cross_cells": s["cross_emotion_mean_eer"], "min_dcf": s["overall"].min_dcf_0_01,
                     "cllr": c.cllr, "min_cllr": c.min_cllr, "act_dcf": c.act_dcf_0_01,
                     "n_trials": table.info["n_trials"], "seconds": time.time() - t0, "nap_dims": naps,
                     "cells": {f"{table.emotions[i]}/{table.emotions[j]}": m.eer
                               for (i, j), m in s["cells"].items()}})
        r = rows[-1]
        print(f"  {label}: EER {r['eer']:.2f} %, same {r['same']:.2f}, cross {r['cross']:.2f} "
              f"({r['seconds']:.1f} s{', NAP dims per fold ' + str(naps) if naps else ''})", flush=True)
    print(f"\n{rows[0]['n_trials']:,} trials (all same-gender pairs of each fold's test speakers, {len(splits)} folds "
          "pooled). Same/cross: EER of the pooled same-/cross-emotion trials (in brackets: mean of the cells).")
    hdr = (f"| {'back-end':55s} | EER % | same % | cross % | cross/same | minDCF 0.01 | Cllr | min Cllr "
           "| actDCF 0.01 |")
    print(hdr)
    print("|" + "---|" * 9)
    for r in rows:
        print(f"| {r['method']:55s} | {r['eer']:5.2f} | {r['same']:5.2f} ({r['same_cells']:5.2f}) "
              f"| {r['cross']:5.2f} ({r['cross_cells']:5.2f}) | {r['cross'] / r['same']:4.2f} "
              f"({r['cross_cells'] / r['same_cells']:4.2f}) | {r['min_dcf']:.3f} | {r['cllr']:.3f} "
              f"| {r['min_cllr']:.3f} | {r['act_dcf']:.3f} |")
    ref = next((r for r in rows if r["method"] == "cosine"), None)
    if ref is not None:
        print("\nTargets against plain cosine (cross -30 % relative, same <= +0.5 points, cross/same <= 1.15):")
        for r in rows[1:]:
            d_cross = 100 * (r["cross"] - ref["cross"]) / ref["cross"]
            ratio = r["cross"] / r["same"]
            ok = (d_cross <= -30, r["same"] - ref["same"] <= 0.5, ratio <= 1.15)
            print(f"  {r['method']:55s} cross {d_cross:+6.1f} % {'OK' if ok[0] else 'missed'}; same "
                  f"{r['same'] - ref['same']:+5.2f} pts {'OK' if ok[1] else 'missed'}; ratio "
                  f"{ratio:.2f} {'OK' if ok[2] else f'missed by {ratio - 1.15:.2f}'}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
