#!/usr/bin/env python3
"""Speech emotion recognition benchmark on real RAVDESS: 4 classes, 6 folds.

    . ./path.sh && OMP_NUM_THREADS=1 python bench/ser_ravdess.py \\
        [--ravdess-root ../shared/corpora/ravdess] [--work exp/bench_ser_ravdess] \\
        [--systems frozen_lr,finetune,randinit_mfcc] [--folds 1-6] [--encoder exp/ge2e]

    # a pre-trained speaker encoder instead of the per-fold x-vector (issue 11):
    local/import_encoder.sh ge2e exp/ge2e
    python bench/ser_ravdess.py --encoder exp/ge2e --systems frozen_lr,finetune --resemblyzer

Protocol: classes neutral, happy, sad, angry (calm, fearful, disgust, surprised left
out); fold k tests actors 4k-3..4k and trains on the other 20 (speaker-independent).
Every figure is weighted F1 (the paper's metric): the mean over folds (with std) and
pooled over all folds' predictions.

References measured in the same run on the same folds, with the same logistic
regression (balanced classes, C by inner speaker-grouped CV), on the vectors of stage
5's two references (pyxv.emotion.reference):
  * eGeMAPSv02 functionals (88, openSMILE) + standardisation + LR
  * MFCC statistics (mean and std over voiced frames of the 23 MFCC, 46) + standardisation + LR

pyxv systems (the recipe's code, pyxv.emotion.systems.run_fold):
  * frozen_lr: per fold, a small x-vector network (conf/xvector_demo.yaml) is trained
    to tell the fold's 20 TRAINING actors apart on all their RAVDESS speech clips
    (60 per actor: all 8 emotions, both intensities) -- never a test actor (asserted);
    x-vectors of the 4-class clips, then the LR;
  * finetune: that network, speaker layer replaced by an emotion layer, fine-tuned on
    the fold's 4-class training clips (dev: training actors carved out by speaker);
  * randinit_mfcc: the same architecture from random init on the 4-class training clips.

With --encoder DIR (an imported encoder, e.g. GE2E by local/import_encoder.sh) the
frozen_lr and finetune systems start from that encoder (never trained on RAVDESS)
instead of the per-fold x-vector; its x-vectors are extracted once through its own
front-end. --resemblyzer adds, on the same folds, Resemblyzer's own GE2E
(preprocess_wav + VoiceEncoder.embed_utterance) + standardised LR as a reference,
and times both extractors on the same in-memory clips (file reading excluded).

Data and features are the recipe's own: local/prepare_ravdess.py writes the corpus
(all/ with the 4 classes, fold1..6/{train,test}) under --work, and the recipe's steps
compute 8 kHz MFCC (conf/mfcc_8k.conf), energy VAD (conf/vad.conf) and eGeMAPS for
it, as stage 2 does; pre-training reads a second data dir of every speech clip (all 8
emotions) with the same ids, its MFCC and VAD made by the same steps. Features and
per-fold models are cached under --work (the steps skip what is up to date); a second
run reuses them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLASSES4 = ("neutral", "happy", "sad", "angry")
log = logging.getLogger("ser_ravdess")


def run_step(*args) -> None:
    """One of the recipe's scripts, from the recipe root (its own freshness checks skip finished work)."""
    import subprocess

    subprocess.run([str(a) for a in args], cwd=REPO, check=True)


# ------------------------------------------------------------------------ corpus
def prepare_corpus(root: Path, work: Path, nj: int) -> Path:
    """work/data/ravdess: all/ (the 4 classes) and fold1..6/{train,test}, by the recipe's
    preparer (speakers ravdess_aNN, utterances ravdess_aNN-<file stem>)."""
    emo = work / "data" / "ravdess"
    if not (emo / "fold6" / "test" / "utt2spk").is_file():
        run_step("local/prepare_ravdess.py", "--nj", nj, root, emo)
    return emo


def prepare_pretrain_dir(root: Path, work: Path) -> Path:
    """work/data/pretrain_all: every RAVDESS speech clip (all 8 emotions, 60 per actor) for
    speaker pre-training, named as the preparer names them."""
    from pyxv.corpora.ravdess import NAME, spk_id
    from pyxv.datadir import write_datadir

    d = work / "data" / "pretrain_all"
    if (d / "utt2spk").is_file():
        return d
    u2s, wav, s2g = {}, {}, {}
    for a in range(1, 25):
        for f in sorted((root / f"Actor_{a:02d}").glob("03-01-*.*")):
            if not NAME.match(f.stem) or f.suffix.lower() not in (".wav", ".flac"):
                continue
            spk = spk_id(a)
            u2s[f"{spk}-{f.stem}"], wav[f"{spk}-{f.stem}"], s2g[spk] = spk, str(f.resolve()), "mf"[a % 2 == 0]
    if len(u2s) < 24 * 60:
        log.warning("found %d speech clips under %s (RAVDESS speech has 1440)", len(u2s), root)
    write_datadir(d, utt2spk=u2s, wav_scp=wav, spk2gender=s2g)
    return d


def prepare_sp_dir(work: Path, factors=(0.9, 1.1)) -> Path:
    """work/data/pretrain_sp: speed-perturbed copies of every clip of pretrain_all (Kaldi's
    ``sox speed f``: tempo and pitch x f, read through a wav.scp pipe), utt ``<spk>-sp<f>-<clip>``."""
    from pyxv.datadir import write_datadir
    from pyxv.io import read_table

    src, d = work / "data" / "pretrain_all", work / "data" / "pretrain_sp"
    if (d / "utt2spk").is_file():
        return d
    u2s, wav = read_table(src / "utt2spk"), read_table(src / "wav.scp")
    out_u2s, out_wav = {}, {}
    for f in factors:
        for u, spk in u2s.items():
            v = f"{spk}-sp{f}-{u[len(spk) + 1:]}"
            out_u2s[v], out_wav[v] = spk, f"sox -V1 {wav[u]} -t wav - speed {f} |"
    write_datadir(d, utt2spk=out_u2s, wav_scp=out_wav)
    return d


# ---------------------------------------------------------------------- features
def make_features(data: Path, work: Path, nj: int, gemaps: bool = False) -> None:
    """The recipe's stage-2 steps on one data dir: MFCC (conf/mfcc_8k.conf) and energy VAD
    (conf/vad.conf), and with ``gemaps`` eGeMAPS LLDs and functionals."""
    t0 = time.time()
    name = str(data.relative_to(work / "data")).replace("/", "_")
    log_dir = work / "log" / name
    run_step("steps/make_mfcc.sh", "--nj", nj, "--mfcc-config", "conf/mfcc_8k.conf", data, log_dir, work / "mfcc")
    run_step("steps/compute_vad.sh", "--nj", nj, "--vad-config", "conf/vad.conf", data, log_dir, work / "mfcc")
    if gemaps:
        run_step("steps/make_gemaps.sh", "--nj", nj, data, log_dir, work / "gemaps")
    log.info("features of %s ready in %.1fs", data, time.time() - t0)


def make_aug(emo: Path, work: Path, nj: int, copies: int, noise_dir: Path) -> None:
    """emo/all_aug: ``copies`` augmented copies per 4-class clip (reverb, noise, music,
    babble from ``noise_dir``, the recipe's steps/augment_data_dir.sh) with MFCC + VAD."""
    import yaml

    out = emo / "all_aug"
    if not (out / "utt2spk").is_file():
        conf = yaml.safe_load((REPO / "conf" / "augment.yaml").read_text())
        conf["copies_per_utt"] = copies
        (work / "augment.yaml").write_text(yaml.safe_dump(conf))
        run_step("steps/augment_data_dir.sh", "--nj", nj, "--config", work / "augment.yaml", emo / "all",
                 noise_dir, out)
    make_features(out, work, nj)


# -------------------------------------------------------------------- references
def reference_lr(name: str, X: dict, emo: Path, folds, seed: int) -> dict:
    """The recipe's reference LR (pyxv.emotion.lr.StandardizedLR) on ``X`` ({utt: vector})
    per fold; returns the summary dict."""
    from pyxv.emotion.data import discover_protocol, labeled_set
    from pyxv.emotion.lr import StandardizedLR
    from pyxv.metrics.classification import classification_metrics, summarize_folds

    splits = discover_protocol(emo)
    fm, T, P = {}, [], []
    for k in folds:
        sp = splits[k - 1]
        tr, te = labeled_set(sp.train), labeled_set(sp.test)
        assert not tr.speakers & te.speakers
        lr = StandardizedLR(sorted(CLASSES4), seed=seed)
        lr.fit(np.stack([X[u] for u in tr.utts]), tr.labels, groups=tr.spks)
        pred = lr.predict(np.stack([X[u] for u in te.utts]))
        fm[f"fold{k}"] = classification_metrics(te.labels, pred, sorted(CLASSES4), fold=f"fold{k}")
        T += te.labels
        P += pred
    return summarize_folds(fm, T, P, sorted(CLASSES4), system=name)


def reference_vectors(system: str, emo: Path) -> dict:
    """{utt: vector} of a reference system of stage 5 (ref_egemaps_lr, ref_mfccstats_lr) for
    every clip of emo/all, read as the recipe reads them (pyxv.emotion.reference)."""
    from pyxv.emotion.reference import load_vectors
    from pyxv.io import read_table

    utts = sorted(read_table(emo / "all" / "utt2spk"))
    X, keep = load_vectors(system, [emo / "all"], utts, "ravdess/all")
    return {utts[i]: x for i, x in zip(keep, X)}


# ------------------------------------------------------------------- pre-training
def pretrain(work: Path, k: int, xcfg: Path, pretrain_sets: list[str]) -> Path:
    """The fold's speaker x-vector on its 20 training actors' clips (every emotion)."""
    import torch

    from pyxv.features.network_input import FeatureSource
    from pyxv.io import read_table, write_table
    from pyxv.train.trainer import train_classifier

    name = "xvector_clean" if pretrain_sets == ["train_actors"] else "xvector_" + "_".join(pretrain_sets)
    out = work / "models" / f"fold{k}" / name
    if (out / "final.pt").is_file():
        return out
    # the fold's test actors as the recipe's preparer wrote them: never pre-trained on
    test_spk = set(read_table(work / "data" / "ravdess" / f"fold{k}" / "test" / "spk2utt"))
    u2s, feats, vads = {}, {}, {}
    sets = (["pretrain_all"] if "train_actors" in pretrain_sets else []) + (["pretrain_sp"] if "sp" in pretrain_sets else [])
    for s in sets:
        d = work / "data" / s
        f, v = read_table(d / "feats.scp"), read_table(d / "vad.scp")
        for u, spk in read_table(d / "utt2spk").items():
            if spk in test_spk or u not in f or u not in v:
                continue
            # Speed-perturbed copies (0.9, 1.1) of the training actors' clips are new speakers (Kaldi's trick).
            u2s[u] = spk if s == "pretrain_all" else f"{spk}-{u.split('-')[1]}"
            feats[u], vads[u] = f[u], v[u]
    # Never a test speaker in pre-training (pseudo-speakers carry their actor's id first):
    pre_actors = {s.split("-")[0] for s in u2s.values()}
    assert not pre_actors & test_spk, f"fold{k}: test actors {sorted(pre_actors & test_spk)} in pre-training data"
    write_table(out / "pretrain.feats.scp", feats)
    write_table(out / "pretrain.vad.scp", vads)
    src = FeatureSource(out / "pretrain.feats.scp", vad_scp=out / "pretrain.vad.scp", cmn_window=300)
    t0 = time.time()
    torch.set_num_threads(1)
    confs = {n: (work / "data" / "pretrain_all" / "conf" / n).read_text() for n in ("mfcc.conf", "vad.conf")}
    train_classifier(src, u2s, str(xcfg), out, progress=False, extra=confs)
    log.info("fold%d: pre-trained the x-vector on %d clips of %d speakers in %.0fs", k, len(u2s),
             len(set(u2s.values())), time.time() - t0)
    return out


def extract(model_dir: Path, emo: Path) -> None:
    """x-vectors of every 4-class clip with the fold's model, where run_fold looks,
    through the model's own front-end (any encoder type)."""
    from pyxv.emotion.systems import xvector_dir
    from pyxv.extract import extract_embeddings, write_embeddings
    from pyxv.train import checkpoint as ckpt

    for sub in ("all", "all_aug"):
        xd = xvector_dir(model_dir, emo, sub)
        if (xd / "xvector.scp").is_file() or not (emo / sub / "utt2spk").is_file():
            continue
        net, ck = ckpt.load_model(model_dir / "final.pt")
        front = type(net).frontend(ck["config"], ck.get("extra") or {}, model_dir)
        src = front.data_source(emo / sub)
        xd.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        n = write_embeddings(extract_embeddings(net, src, front.utterances(emo / sub)), xd / "xvector.ark")
        log.info("%d x-vectors of %s with %s in %.1fs", n, emo / sub, model_dir, time.time() - t0)


def encoder_model_dir(work: Path, encoder: Path) -> Path:
    """work/models/<name>: the imported encoder's final.pt (linked), where the x-vectors
    of all folds are extracted once (all folds share the 4-class clips)."""
    if not (encoder / "final.pt").is_file():
        raise SystemExit(f"--encoder {encoder}: no final.pt (import one first: local/import_encoder.sh ge2e {encoder})")
    d = work / "models" / f"encoder_{encoder.resolve().name}"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "final.pt").exists():
        os.symlink((encoder / "final.pt").resolve(), d / "final.pt")
    return d


def resemblyzer_reference(emo: Path, folds) -> tuple[dict, dict]:
    """Resemblyzer's own GE2E embeddings + standardised LR (the issue's 63.4 reference),
    and both extractors' speed on the same in-memory 16 kHz clips, one thread each."""
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as e:
        raise SystemExit(f"--resemblyzer needs the resemblyzer package (test-only: pip install --no-deps "
                         f"resemblyzer==0.1.4 webrtcvad-wheels librosa): {e}")
    import torch

    from pyxv.features.frontend import Ge2eFrontEnd
    from pyxv.io import read_audio, read_table
    from pyxv.train.import_encoder import ge2e_state_dict, resemblyzer_weights
    from pyxv.nnet.config import build_encoder

    wav = read_table(emo / "all" / "wav.scp")
    utts = sorted(wav)
    audio = [read_audio(wav[u]) for u in utts]  # read once; timing excludes file reading
    enc = VoiceEncoder("cpu", verbose=False)
    torch.set_num_threads(1)
    t0 = time.time()
    ref = {u: enc.embed_utterance(preprocess_wav(x / 32768.0, source_sr=sr)) for u, (x, sr) in zip(utts, audio)}
    t_ref = time.time() - t0
    net = build_encoder({"model": {"type": "ge2e_lstm"}}, 0)
    import tempfile
    with tempfile.TemporaryDirectory() as td:
        net.load_state_dict(ge2e_state_dict(resemblyzer_weights(None, None, Path(td), download=False)[0]))
    net.eval()
    front = Ge2eFrontEnd()
    t0 = time.time()
    mats = [front.from_samples(x, sr) for x, sr in audio]
    embs = net.embed_utterances(mats)
    t_ours = time.time() - t0
    ours = dict(zip(utts, embs))
    dur = sum(len(x) / sr for x, sr in audio)
    cos = np.array([float(ref[u] @ ours[u]) for u in ref])
    speed = {"clips": len(utts), "audio_s": round(dur, 1), "resemblyzer_x_rt": round(dur / t_ref, 1),
             "pyxv_x_rt": round(dur / t_ours, 1), "ratio": round(t_ref / t_ours, 2),
             "cosine_whole_path_mean": round(float(cos.mean()), 4), "cosine_whole_path_min": round(float(cos.min()), 4),
             "cosine_whole_path_p5": round(float(np.percentile(cos, 5)), 4)}
    return reference_lr("Resemblyzer GE2E + LR", ref, emo, folds, 777), speed


# ---------------------------------------------------------------------------- main
def parse_folds(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    if not set(out) <= set(range(1, 7)):
        raise SystemExit(f"--folds: folds are 1..6, got {s}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ravdess-root", default=str(REPO.parent / "shared" / "corpora" / "ravdess"))
    ap.add_argument("--work", default=str(REPO / "exp" / "bench_ser_ravdess"))
    ap.add_argument("--systems", default="frozen_lr,finetune,randinit_mfcc")
    ap.add_argument("--folds", default="1-6")
    ap.add_argument("--nj", type=int, default=2)
    ap.add_argument("--xvector-config", default=str(REPO / "conf" / "xvector_demo.yaml"))
    ap.add_argument("--emotion-config", default=str(REPO / "conf" / "emotion.yaml"))
    ap.add_argument("--nnet", default="", help="emotion nnet overrides, e.g. 'epochs=30,patience=8'")
    ap.add_argument("--lr", default="", help="emotion lr overrides, e.g. 'transform=lda'")
    ap.add_argument("--pretrain-data", default="train_actors",
                    help="train_actors (the fold's 20 training actors, every clip) or train_actors+sp "
                         "(plus their 0.9/1.1 speed-perturbed copies as 40 more pseudo-speakers)")
    ap.add_argument("--train-data", default="clean", choices=["clean", "clean+aug"],
                    help="emotion training data; clean+aug adds augmented copies of the training clips")
    ap.add_argument("--aug-copies", type=int, default=2, help="augmented copies per clip for clean+aug")
    ap.add_argument("--noise-dir", default=str(REPO / "data" / "noise"),
                    help="musan_{noise,music,speech} and rirs data dirs (the recipe's stage 0 makes them)")
    ap.add_argument("--seed", type=int, default=None,
                    help="the emotion systems' seed instead of the config's (with --tag, to measure the seed spread)")
    ap.add_argument("--tag", default="", help="suffix of the result dirs (to compare settings)")
    ap.add_argument("--encoder", default="", help="an imported encoder's exp dir (final.pt) instead of the "
                    "per-fold x-vector, e.g. exp/ge2e from local/import_encoder.sh ge2e exp/ge2e")
    ap.add_argument("--resemblyzer", action="store_true", help="Resemblyzer's own GE2E + LR reference and "
                    "extraction speed side by side (needs the resemblyzer package)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("pyxv.train",):
        logging.getLogger(name).setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    from pyxv.emotion import systems
    from pyxv.emotion.config import load_emotion_config
    from pyxv.metrics.classification import summarize_folds

    t_start = time.time()
    work = Path(a.work).resolve()
    root = Path(a.ravdess_root)
    if not (root / "Actor_01").is_dir():
        raise SystemExit(f"RAVDESS not found at {root} (Actor_01 ... Actor_24)")
    folds = parse_folds(a.folds)
    wanted = [s for s in a.systems.split(",") if s]
    emo = prepare_corpus(root, work, a.nj)
    make_features(emo / "all", work, a.nj, gemaps=True)
    pretrain_sets = a.pretrain_data.split("+")
    if any(s in ("frozen_lr", "finetune") for s in wanted) and not a.encoder:
        make_features(prepare_pretrain_dir(root, work), work, a.nj)
        if "sp" in pretrain_sets:
            make_features(prepare_sp_dir(work), work, a.nj)
    if a.train_data == "clean+aug":
        make_aug(emo, work, a.nj, a.aug_copies, Path(a.noise_dir).resolve())
    timing = {"features": round(time.time() - t_start, 1)}

    results = {}
    results["ref_egemaps_lr"] = reference_lr("eGeMAPS functionals + LR", reference_vectors("ref_egemaps_lr", emo),
                                             emo, folds, 777)
    results["ref_mfcc_stats_lr"] = reference_lr("MFCC mean+std + LR", reference_vectors("ref_mfccstats_lr", emo),
                                                emo, folds, 777)
    speed = None
    if a.resemblyzer:
        results["ref_resemblyzer_lr"], speed = resemblyzer_reference(emo, folds)
        timing["resemblyzer_reference"] = round(time.time() - t_start - sum(timing.values()), 1)
    encoder = Path(a.encoder) if a.encoder else None

    over_n = {k: v for k, v in (x.split("=") for x in filter(None, a.nnet.split(",")))}
    over_l = {k: v for k, v in (x.split("=") for x in filter(None, a.lr.split(",")))}

    def conv(v):
        for t in (int, float):
            try:
                return t(v)
            except ValueError:
                pass
        return {"true": True, "false": False, "null": None}.get(v, v)
    overrides = {"nnet": {k: conv(v) for k, v in over_n.items()}, "lr": {k: conv(v) for k, v in over_l.items()}}
    if a.seed is not None:
        overrides["seed"] = a.seed
    sysnames = {"frozen_lr": "frozen_lr_clean", "finetune": "finetune_clean", "randinit_mfcc": "randinit_mfcc",
                "randinit_gemaps": "randinit_gemaps"}
    fold_metrics = {s: {} for s in wanted}
    preds = {s: ([], []) for s in wanted}
    out_root = work / f"emotion{a.tag}"
    t_pre = t_sys = 0.0
    for k in folds:
        t0 = time.time()
        model_dir = None
        if encoder is not None and any(s in ("frozen_lr", "finetune") for s in wanted):
            model_dir = encoder_model_dir(work, encoder)
            extract(model_dir, emo)
        elif any(s in ("frozen_lr", "finetune") for s in wanted):
            model_dir = pretrain(work, k, Path(a.xvector_config), pretrain_sets)
            extract(model_dir, emo)
        t_pre += time.time() - t0
        cfg = load_emotion_config(a.emotion_config, overrides=overrides)
        cfg["xvector_models"] = {"clean": str(model_dir or work / "models" / f"fold{k}" / "xvector_clean"),
                                 "aug": str(model_dir)}
        if not cfg["nnet"]["architecture"]:
            cfg["nnet"]["architecture"] = a.xvector_config
        for s in wanted:
            t0 = time.time()
            m = systems.run_fold(sysnames[s], a.train_data, emo, k, out_root / f"fold{k}", cfg)
            t_sys += time.time() - t0
            fold_metrics[s][f"fold{k}"] = m
            d = systems.system_dir(out_root / f"fold{k}", sysnames[s], a.train_data) / f"fold{k}"
            for _, t, p in systems.read_predictions(d / "predictions.txt"):
                preds[s][0].append(t)
                preds[s][1].append(p)
            log.info("fold%d %s: weighted F1 %.2f", k, s, 100 * m["weighted_f1"])
    for s in wanted:
        results[s] = summarize_folds(fold_metrics[s], *preds[s], sorted(CLASSES4), system=s)
    timing.update(pretrain_and_extract=round(t_pre, 1), systems=round(t_sys, 1), total=round(time.time() - t_start, 1))

    rows = [("eGeMAPS functionals + LR (reference)", "ref_egemaps_lr"),
            ("MFCC mean+std + LR (reference)", "ref_mfcc_stats_lr")]
    if a.resemblyzer:
        rows.append(("Resemblyzer's own GE2E + LR (reference)", "ref_resemblyzer_lr"))
    pre = f"pyxv {encoder.name} encoder" if encoder is not None else "pyxv x-vector (fold's training actors)"
    names = {"frozen_lr": f"{pre} frozen + LR",
             "finetune": f"{pre} fine-tuned", "randinit_mfcc": "pyxv random-init ResNet, MFCC",
             "randinit_gemaps": "pyxv random-init ResNet, GeMAPS LLD"}
    rows += [(names[s], s) for s in wanted]
    lines = [f"RAVDESS 4 classes, folds {','.join(map(str, folds))} (fold k tests actors 4k-3..4k); weighted F1 %; "
             f"emotion training data {a.train_data}; x-vector pre-training data {a.pretrain_data}",
             "", "| system | mean-fold wF1 (std) | pooled wF1 | mean UA |", "|---|---|---|---|"]
    for label, key in rows:
        r = results[key]
        lines.append(f"| {label} | {100 * r['mean_weighted_f1']:.2f} ({100 * r['std_weighted_f1']:.2f}) | "
                     f"{100 * r['pooled']['weighted_f1']:.2f} | {100 * r['mean_unweighted_accuracy']:.2f} |")
    lines += [f"per fold ({', '.join(f'fold{k}' for k in folds)}): " + "; ".join(
        f"{key} " + " ".join(f"{100 * results[key]['folds'][f'fold{k}']['weighted_f1']:.1f}" for k in folds)
        for _, key in rows if "folds" in results[key])]
    if speed is not None:
        lines += ["", f"GE2E extraction on the same {speed['clips']} in-memory clips ({speed['audio_s']} s), one "
                  f"thread: Resemblyzer embed_utterance {speed['resemblyzer_x_rt']}x real time, pyxv "
                  f"{speed['pyxv_x_rt']}x ({speed['ratio']}x faster); pyxv whole path (own silence trimming) vs "
                  f"Resemblyzer's (webrtcvad): cosine mean {speed['cosine_whole_path_mean']}, "
                  f"5th percentile {speed['cosine_whole_path_p5']}, min {speed['cosine_whole_path_min']}"]
    lines += ["", f"wall time: {timing}", f"load average at the end: {open('/proc/loadavg').read().split()[:3]}"]
    text = "\n".join(lines)
    print(text)
    work.mkdir(parents=True, exist_ok=True)
    with open(work / f"results{a.tag}.json", "w") as f:
        json.dump({"results": results, "timing": timing, "speed": speed, "args": vars(a)}, f, indent=1)
    (work / f"results{a.tag}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
