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
regression (balanced classes, C by inner speaker-grouped CV):
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

Features (8 kHz MFCC of conf/mfcc_8k.conf + energy VAD of conf/vad.conf, eGeMAPS) and
per-fold models are cached under --work; a second run reuses them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
CLASSES4 = ("neutral", "happy", "sad", "angry")
log = logging.getLogger("ser_ravdess")


# ------------------------------------------------------------------------ corpus
def list_clips(root: Path) -> list[dict]:
    """Every speech clip: {utt, spk, actor, emotion, path}; utt ids start with the speaker."""
    clips = []
    for a in range(1, 25):
        d = root / f"Actor_{a:02d}"
        for f in sorted(d.glob("03-01-*.*")):
            parts = f.stem.split("-")
            if len(parts) != 7 or f.suffix.lower() not in (".wav", ".flac"):
                continue
            spk = f"a{a:02d}"
            clips.append({"utt": f"{spk}-{f.stem}", "spk": spk, "actor": a, "emotion": EMOTIONS[parts[2]],
                          "path": str(f)})
    if len(clips) < 24 * 60:
        log.warning("found %d speech clips under %s (RAVDESS speech has 1440)", len(clips), root)
    return clips


def fold_test_actors(k: int) -> set[int]:
    return set(range(4 * k - 3, 4 * k + 1))


# ---------------------------------------------------------------------- features
def _mfcc_vad(args):
    path, mfcc_conf, vad_conf = args
    from pyxv.features.mfcc import Mfcc
    from pyxv.features.vad import VadOptions, compute_vad
    from pyxv.io import read_audio

    m = Mfcc.from_conf(mfcc_conf)
    x, _ = read_audio(path, sample_rate=m.sample_rate)
    feats = m(x, seed=0)
    return feats, compute_vad(feats, VadOptions.from_conf(vad_conf))


def _mfcc_vad_sp(args):
    """MFCC + VAD of a speed-perturbed copy (Kaldi's sox ``speed`` f: tempo and pitch x f)."""
    path, mfcc_conf, vad_conf, factor = args
    from scipy.signal import resample_poly

    from pyxv.features.mfcc import Mfcc
    from pyxv.features.vad import VadOptions, compute_vad
    from pyxv.io import read_audio

    m = Mfcc.from_conf(mfcc_conf)
    x, _ = read_audio(path, sample_rate=m.sample_rate)
    up, down = 100, int(round(100 * factor))
    x = resample_poly(x, up, down).astype(np.float32)
    feats = m(x, seed=0)
    return feats, compute_vad(feats, VadOptions.from_conf(vad_conf))


def make_sp_features(clips, work: Path, nj: int, mfcc_conf: Path, vad_conf: Path, factors=(0.9, 1.1)) -> None:
    """feats/sp_{feats,vad}.scp: speed-perturbed copies of every clip, utt ``<spk>-sp<f>-<clip>``."""
    import kaldiio

    fdir = work / "feats"
    if (fdir / "sp_vad.scp").is_file():
        return
    t0 = time.time()
    jobs = [(c, f) for f in factors for c in clips]
    with ProcessPoolExecutor(nj) as ex:
        res = list(ex.map(_mfcc_vad_sp, [(c["path"], str(mfcc_conf), str(vad_conf), f) for c, f in jobs],
                          chunksize=16))
    items = sorted(((f"{c['spk']}-sp{f}-{c['utt'][len(c['spk']) + 1:]}", r) for (c, f), r in zip(jobs, res)))
    with kaldiio.WriteHelper(f"ark,scp:{fdir}/sp_feats.ark,{fdir}/sp_feats.scp") as w:
        for u, (feat, _) in items:
            w(u, feat)
    with kaldiio.WriteHelper(f"ark,scp:{fdir}/sp_vad.ark,{fdir}/sp_vad.scp") as w:
        for u, (_, v) in items:
            w(u, v)
    log.info("speed-perturbed MFCC + VAD of %d copies in %.1fs", len(items), time.time() - t0)


def _egemaps(paths):
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    return [smile.process_file(p).to_numpy().reshape(-1).astype(np.float32) for p in paths]


def make_features(clips, work: Path, nj: int, mfcc_conf: Path, vad_conf: Path) -> None:
    """feats.scp/vad.scp for every clip, gemaps.scp (88 functionals) for the 4-class clips."""
    import kaldiio

    fdir = work / "feats"
    fdir.mkdir(parents=True, exist_ok=True)
    if not (fdir / "vad.scp").is_file():
        t0 = time.time()
        with ProcessPoolExecutor(nj) as ex:
            res = list(ex.map(_mfcc_vad, [(c["path"], str(mfcc_conf), str(vad_conf)) for c in clips], chunksize=16))
        with kaldiio.WriteHelper(f"ark,scp:{fdir}/feats.ark,{fdir}/feats.scp") as w:
            for c, (f, _) in sorted(zip(clips, res), key=lambda t: t[0]["utt"]):
                w(c["utt"], f)
        with kaldiio.WriteHelper(f"ark,scp:{fdir}/vad.ark,{fdir}/vad.scp") as w:
            for c, (_, v) in sorted(zip(clips, res), key=lambda t: t[0]["utt"]):
                w(c["utt"], v)
        log.info("MFCC + VAD of %d clips in %.1fs", len(clips), time.time() - t0)
    four = [c for c in clips if c["emotion"] in CLASSES4]
    if not (fdir / "gemaps.scp").is_file():
        t0 = time.time()
        paths = [c["path"] for c in four]
        parts = [paths[i::nj] for i in range(nj)]
        with ProcessPoolExecutor(nj) as ex:
            outs = list(ex.map(_egemaps, parts))
        vec = {}
        for i in range(nj):
            for c, v in zip(four[i::nj], outs[i]):
                vec[c["utt"]] = v
        with kaldiio.WriteHelper(f"ark,scp:{fdir}/gemaps.ark,{fdir}/gemaps.scp") as w:
            for u in sorted(vec):
                w(u, vec[u][None, :])
        log.info("eGeMAPS functionals of %d clips in %.1fs", len(four), time.time() - t0)


def write_dirs(clips, work: Path) -> Path:
    """work/data/ravdess/all (4-class clips with features) and work/data/pretrain_all (every clip)."""
    from pyxv.datadir import write_datadir
    from pyxv.io import read_table, write_table

    fdir = work / "feats"
    feats, vad = read_table(fdir / "feats.scp"), read_table(fdir / "vad.scp")
    four = [c for c in clips if c["emotion"] in CLASSES4]
    for name, cs in (("ravdess/all", four), ("pretrain_all", clips)):
        d = work / "data" / name
        write_datadir(d, utt2spk={c["utt"]: c["spk"] for c in cs}, wav_scp={c["utt"]: c["path"] for c in cs},
                      utt2emo={c["utt"]: c["emotion"] for c in cs},
                      spk2gender={c["spk"]: "m" if c["actor"] % 2 else "f" for c in cs})
        write_table(d / "feats.scp", {c["utt"]: feats[c["utt"]] for c in cs})
        write_table(d / "vad.scp", {c["utt"]: vad[c["utt"]] for c in cs})
    return work / "data" / "ravdess"


def make_aug(work: Path, nj: int, copies: int, noise_dir: Path, mfcc_conf: Path, vad_conf: Path) -> None:
    """work/data/ravdess/all_aug: ``copies`` augmented copies per 4-class clip (reverb, noise,
    music, babble from ``noise_dir``, the recipe's steps/augment_data_dir.sh) with MFCC + VAD."""
    import subprocess

    import kaldiio
    import yaml

    from pyxv.io import read_table

    out = work / "data" / "ravdess" / "all_aug"
    if (out / "vad.scp").is_file():
        return
    t0 = time.time()
    conf = yaml.safe_load((REPO / "conf" / "augment.yaml").read_text())
    conf["copies_per_utt"] = copies
    (work / "augment.yaml").write_text(yaml.safe_dump(conf))
    subprocess.run(["steps/augment_data_dir.sh", "--nj", str(nj), "--config", str(work / "augment.yaml"),
                    str(work / "data" / "ravdess" / "all"), str(noise_dir), str(out)], cwd=REPO, check=True)
    wav = read_table(out / "wav.scp")
    utts = sorted(wav)
    with ProcessPoolExecutor(nj) as ex:
        res = list(ex.map(_mfcc_vad, [(wav[u], str(mfcc_conf), str(vad_conf)) for u in utts], chunksize=16))
    with kaldiio.WriteHelper(f"ark,scp:{out}/feats.ark,{out}/feats.scp") as w:
        for u, (f, _) in zip(utts, res):
            w(u, f)
    with kaldiio.WriteHelper(f"ark,scp:{out}/vad.ark,{out}/vad.scp") as w:
        for u, (_, v) in zip(utts, res):
            w(u, v)
    log.info("%d augmented copies with MFCC + VAD in %.1fs", len(utts), time.time() - t0)


def fold_corpus(work: Path, k: int, clips) -> Path:
    """work/data/ravdess_f<k>: all/ (a link to the shared 4-class dir) and fold<k>/{train,test}."""
    from pyxv.datadir import write_datadir

    emo = work / "data" / f"ravdess_f{k}"
    (emo / "all").parent.mkdir(parents=True, exist_ok=True)
    for sub in ("all", "all_aug"):
        if not (emo / sub).exists() and (work / "data" / "ravdess" / sub).is_dir():
            os.symlink(f"../ravdess/{sub}", emo / sub)
    test = fold_test_actors(k)
    four = [c for c in clips if c["emotion"] in CLASSES4]
    for name, cs in (("train", [c for c in four if c["actor"] not in test]),
                     ("test", [c for c in four if c["actor"] in test])):
        write_datadir(emo / f"fold{k}" / name, utt2spk={c["utt"]: c["spk"] for c in cs},
                      wav_scp={c["utt"]: c["path"] for c in cs}, utt2emo={c["utt"]: c["emotion"] for c in cs})
    return emo


# -------------------------------------------------------------------- references
def reference_lr(name: str, X: dict, clips, folds, seed: int) -> dict:
    """The recipe's reference LR (pyxv.emotion.reference) per fold; returns the summary dict."""
    from pyxv.emotion.reference import StandardizedLR
    from pyxv.metrics.classification import classification_metrics, summarize_folds

    four = [c for c in clips if c["emotion"] in CLASSES4]
    fm, T, P = {}, [], []
    for k in folds:
        test = fold_test_actors(k)
        tr = [c for c in four if c["actor"] not in test]
        te = [c for c in four if c["actor"] in test]
        assert not {c["spk"] for c in tr} & {c["spk"] for c in te}
        lr = StandardizedLR(sorted(CLASSES4), seed=seed)
        lr.fit(np.stack([X[c["utt"]] for c in tr]), [c["emotion"] for c in tr], groups=[c["spk"] for c in tr])
        pred = lr.predict(np.stack([X[c["utt"]] for c in te]))
        truth = [c["emotion"] for c in te]
        fm[f"fold{k}"] = classification_metrics(truth, pred, sorted(CLASSES4), fold=f"fold{k}")
        T += truth
        P += pred
    return summarize_folds(fm, T, P, sorted(CLASSES4), system=name)


def mfcc_stats(work: Path, clips) -> dict:
    import kaldiio

    from pyxv.emotion.reference import mfcc_stats as stats
    from pyxv.io import read_table

    feats, vad = read_table(work / "feats" / "feats.scp"), read_table(work / "feats" / "vad.scp")
    return {c["utt"]: stats(kaldiio.load_mat(feats[c["utt"]]), kaldiio.load_mat(vad[c["utt"]]), what=c["utt"])
            for c in clips if c["emotion"] in CLASSES4}


# ------------------------------------------------------------------- pre-training
def pretrain(work: Path, k: int, clips, xcfg: Path, pretrain_sets: list[str]) -> Path:
    """The fold's speaker x-vector on its 20 training actors' clips (every emotion)."""
    import torch

    from pyxv.io import read_table
    from pyxv.features.network_input import FeatureSource
    from pyxv.train.trainer import train_classifier

    name = "xvector_clean" if pretrain_sets == ["train_actors"] else "xvector_" + "_".join(pretrain_sets)
    out = work / "models" / f"fold{k}" / name
    if (out / "final.pt").is_file():
        return out
    test_spk = {f"a{a:02d}" for a in fold_test_actors(k)}
    u2s = {}
    d = work / "data" / "pretrain_all"
    feats, vads = read_table(d / "feats.scp"), read_table(d / "vad.scp")
    if "train_actors" in pretrain_sets:
        u2s.update({c["utt"]: c["spk"] for c in clips if c["actor"] not in fold_test_actors(k)})
    if "sp" in pretrain_sets:
        # Speed-perturbed copies (0.9, 1.1) of the training actors' clips as new speakers (Kaldi's trick).
        for u, v in read_table(work / "feats" / "sp_feats.scp").items():
            spk, f = u.split("-")[:2]
            if int(spk[1:]) not in fold_test_actors(k):
                u2s[u] = f"{spk}-{f}"
                feats[u] = v
        vads.update(read_table(work / "feats" / "sp_vad.scp"))
    # Never a test speaker in pre-training (pseudo-speakers carry their actor's id first):
    pre_actors = {s.split("-")[0] for s in u2s.values()}
    assert not pre_actors & test_spk, f"fold{k}: test actors {sorted(pre_actors & test_spk)} in pre-training data"
    from pyxv.io import write_table
    write_table(out / "pretrain.feats.scp", {u: v for u, v in feats.items() if u in u2s})
    write_table(out / "pretrain.vad.scp", {u: v for u, v in vads.items() if u in u2s})
    src = FeatureSource(out / "pretrain.feats.scp", vad_scp=out / "pretrain.vad.scp", cmn_window=300)
    t0 = time.time()
    torch.set_num_threads(1)
    train_classifier(src, u2s, str(xcfg), out, progress=False)
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
    """work/models/<name>: the imported encoder's final.pt (linked), where the per-fold
    x-vectors of all folds are extracted once (all folds share the 4-class clips)."""
    if not (encoder / "final.pt").is_file():
        raise SystemExit(f"--encoder {encoder}: no final.pt (import one first: local/import_encoder.sh ge2e {encoder})")
    d = work / "models" / f"encoder_{encoder.resolve().name}"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "final.pt").exists():
        os.symlink((encoder / "final.pt").resolve(), d / "final.pt")
    return d


def link_shared_xvectors(model_dir: Path, work: Path, emo: Path) -> None:
    """Fold corpora share all/ (and all_aug/): point each fold's x-vector dir at one extraction."""
    from pyxv.emotion.systems import xvector_dir

    for sub in ("all", "all_aug"):
        shared = xvector_dir(model_dir, work / "data" / "ravdess", sub)
        if not (emo / sub).exists():
            continue
        if not (shared / "xvector.scp").is_file():
            extract(model_dir, work / "data" / "ravdess")
        xd = xvector_dir(model_dir, emo, sub)
        if not xd.exists():
            xd.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(shared.resolve(), xd)


def resemblyzer_reference(clips, folds, nj: int) -> tuple[dict, dict]:
    """Resemblyzer's own GE2E embeddings + standardised LR (the issue's 63.4 reference),
    and both extractors' speed on the same in-memory 16 kHz clips, one thread each."""
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as e:
        raise SystemExit(f"--resemblyzer needs the resemblyzer package (test-only: pip install --no-deps "
                         f"resemblyzer==0.1.4 webrtcvad-wheels librosa): {e}")
    import torch

    from pyxv.features.frontend import Ge2eFrontEnd
    from pyxv.io import read_audio
    from pyxv.nnet.import_encoder import ge2e_state_dict, resemblyzer_weights
    from pyxv.nnet.config import build_encoder

    four = [c for c in clips if c["emotion"] in CLASSES4]
    audio = [read_audio(c["path"]) for c in four]  # read once; timing excludes file reading
    enc = VoiceEncoder("cpu", verbose=False)
    torch.set_num_threads(1)
    t0 = time.time()
    ref = {c["utt"]: enc.embed_utterance(preprocess_wav(x / 32768.0, source_sr=sr)) for c, (x, sr) in zip(four, audio)}
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
    ours = dict(zip([c["utt"] for c in four], embs))
    dur = sum(len(x) / sr for x, sr in audio)
    cos = np.array([float(ref[u] @ ours[u]) for u in ref])
    speed = {"clips": len(four), "audio_s": round(dur, 1), "resemblyzer_x_rt": round(dur / t_ref, 1),
             "pyxv_x_rt": round(dur / t_ours, 1), "ratio": round(t_ref / t_ours, 2),
             "cosine_whole_path_mean": round(float(cos.mean()), 4), "cosine_whole_path_min": round(float(cos.min()), 4),
             "cosine_whole_path_p5": round(float(np.percentile(cos, 5)), 4)}
    return reference_lr("Resemblyzer GE2E + LR", ref, clips, folds, 777), speed


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
    work = Path(a.work)
    root = Path(a.ravdess_root)
    if not (root / "Actor_01").is_dir():
        raise SystemExit(f"RAVDESS not found at {root} (Actor_01 ... Actor_24)")
    folds = parse_folds(a.folds)
    clips = list_clips(root)
    make_features(clips, work, a.nj, REPO / "conf" / "mfcc_8k.conf", REPO / "conf" / "vad.conf")
    write_dirs(clips, work)
    if "sp" in a.pretrain_data.split("+"):
        make_sp_features(clips, work, a.nj, REPO / "conf" / "mfcc_8k.conf", REPO / "conf" / "vad.conf")
    if a.train_data == "clean+aug":
        make_aug(work, a.nj, a.aug_copies, Path(a.noise_dir), REPO / "conf" / "mfcc_8k.conf", REPO / "conf" / "vad.conf")
    timing = {"features": round(time.time() - t_start, 1)}

    results = {}
    import kaldiio
    from pyxv.io import read_table
    gem = {u: kaldiio.load_mat(v).reshape(-1) for u, v in read_table(work / "feats" / "gemaps.scp").items()}
    results["ref_egemaps_lr"] = reference_lr("eGeMAPS functionals + LR", gem, clips, folds, 777)
    results["ref_mfcc_stats_lr"] = reference_lr("MFCC mean+std + LR", mfcc_stats(work, clips), clips, folds, 777)
    speed = None
    if a.resemblyzer:
        results["ref_resemblyzer_lr"], speed = resemblyzer_reference(clips, folds, a.nj)
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
    wanted = [s for s in a.systems.split(",") if s]
    sysnames = {"frozen_lr": "frozen_lr_clean", "finetune": "finetune_clean", "randinit_mfcc": "randinit_mfcc",
                "randinit_gemaps": "randinit_gemaps"}
    fold_metrics = {s: {} for s in wanted}
    preds = {s: ([], []) for s in wanted}
    out_root = work / f"emotion{a.tag}"
    t_pre = t_sys = 0.0
    for k in folds:
        emo = fold_corpus(work, k, clips)
        t0 = time.time()
        model_dir = None
        if encoder is not None and any(s in ("frozen_lr", "finetune") for s in wanted):
            model_dir = encoder_model_dir(work, encoder)
            link_shared_xvectors(model_dir, work, emo)
        elif any(s in ("frozen_lr", "finetune") for s in wanted):
            model_dir = pretrain(work, k, clips, Path(a.xvector_config), a.pretrain_data.split("+"))
            extract(model_dir, emo)
        t_pre += time.time() - t0
        cfg = load_emotion_config(a.emotion_config, overrides=overrides)
        cfg["xvector_models"] = {"clean": str(model_dir or work / "models" / f"fold{k}" / "xvector_clean"),
                                 "aug": str(model_dir)}
        if not cfg["nnet"]["architecture"]:
            cfg["nnet"]["architecture"] = a.xvector_config
        for s in wanted:
            t0 = time.time()
            m = systems.run_fold(sysnames[s], a.train_data, emo, 1, out_root / f"fold{k}", cfg)
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
