"""Cross-corpus evaluation: a system's final model (trained on corpus A by stage 5)
scored on another prepared corpus B with the same classes.

* Labels: B's ``utt2emo`` labels must be among the model's classes, or be mapped
  onto them by a label map (lines ``<B label> <model class>``; ``<B label> -``
  leaves that label's utterances out). A label that neither names a class nor is
  mapped stops the evaluation in one line naming the labels and the map.
* Decision: the argmax over the model's classes that B's mapped labels use (a
  class B does not have is never chosen); posteriors keep every class.
* Inputs: computed from B's data dir as the source system computes its own, with
  the source's feature configs: x-vectors of the system's x-vector model from B's
  MFCC + VAD (its ``conf/mfcc.conf`` must match the model's), the reference
  systems' eGeMAPS functionals or MFCC statistics, the networks' own front-end
  (MFCC + VAD, GE2E mel from ``wav.scp``, or GeMAPS LLDs standardised with the
  model's training statistics).
* Standardisation (LR systems, optional, reported beside the plain figure): B's
  back-end inputs are standardised per dimension on B's own mean and std and put
  on the scale of the system's training inputs (``final/input_stats.json``):
  ``(x - mean_B) / std_B * std_A + mean_A``. No label is used; the network
  systems have no back-end input and are scored plainly only.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ..datadir import DataDir
from ..io import atomic_open, write_lines
from ..metrics.classification import classification_metrics
from .spec import MFCC_STATS, REFERENCE, system_spec

log = logging.getLogger("pyxv.emotion")

DROP = "-"   # a label map's target that leaves the label's utterances out


class CrossCorpusError(ValueError):
    """Input that cannot be evaluated; the message names the file and what is wrong."""


# ------------------------------------------------------------------- labels
def read_label_map(path: str | Path) -> dict[str, str]:
    """``<corpus label> <model class or ->`` per line (``#`` starts a comment)."""
    out: dict[str, str] = {}
    p = Path(path)
    if not p.is_file():
        raise CrossCorpusError(f"label map {p} does not exist")
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("#")[0].split()
        if not parts:
            continue
        if len(parts) != 2:
            raise CrossCorpusError(f"{p}:{n}: expected '<corpus label> <model class>' (or '<label> -'), "
                                   f"got '{line.strip()}'")
        if parts[0] in out and out[parts[0]] != parts[1]:
            raise CrossCorpusError(f"{p}:{n}: label '{parts[0]}' mapped twice ({out[parts[0]]}, {parts[1]})")
        out[parts[0]] = parts[1]
    return out


def map_labels(utt2emo: dict[str, str], classes: list[str], label_map: dict[str, str] | None = None,
               where: str = "utt2emo", map_file: str | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """(utt -> model class for the utterances kept, {label: utterances left out by '-'}).

    A label is kept as it is when it is a model class and the map does not name it;
    anything else must be mapped (onto a model class, or '-')."""
    label_map = label_map or {}
    bad_targets = sorted({t for t in label_map.values() if t != DROP and t not in classes})
    if bad_targets:
        raise CrossCorpusError(f"{map_file}: maps onto {bad_targets}, which are not classes of the model "
                               f"({' '.join(classes)})")
    unmapped = sorted({lab for lab in utt2emo.values() if lab not in label_map and lab not in classes})
    if unmapped:
        raise CrossCorpusError(
            f"{where}: labels {unmapped} are not classes of the model ({' '.join(classes)}) and "
            + (f"the label map {map_file} does not map them" if map_file else "no label map was given")
            + " (a line '<label> <class>' maps one, '<label> -' leaves its utterances out)")
    kept, dropped = {}, {}
    for u, lab in utt2emo.items():
        c = label_map.get(lab, lab)
        if c == DROP:
            dropped[lab] = dropped.get(lab, 0) + 1
        else:
            kept[u] = c
    if not kept:
        raise CrossCorpusError(f"{where}: the label map {map_file} leaves no utterance")
    return kept, dropped


def decide(post: np.ndarray, classes: list[str], allowed: list[str]) -> list[str]:
    """Argmax of each row over the ``allowed`` classes only."""
    cols = [classes.index(c) for c in allowed]
    return [allowed[i] for i in np.asarray(post)[:, cols].argmax(1)]


# ------------------------------------------------------------------- models
def final_dir(system_dir: str | Path) -> Path:
    """The finished final model of a system dir (a ``final/`` dir is taken as it is)."""
    p = Path(system_dir)
    if not p.is_dir():
        raise CrossCorpusError(f"{p}: no such system dir")
    f = p if p.name == "final" else p / "final"
    if not f.is_dir():
        raise CrossCorpusError(f"{p}: no final/ model (stage 5 trains it after the folds: rerun "
                               "steps/train_emotion.sh for this system); cross-corpus evaluation uses it")
    if not (f / "final.json").is_file():
        raise CrossCorpusError(f"{f}: unfinished (no final.json): rerun steps/train_emotion.sh for this system")
    return f


def read_lr_model(model_dir: Path) -> tuple[object, dict]:
    """(model, meta) of the LR system model a fold or final dir holds."""
    from ..params import ParamsError
    from .lr import load_lr_model

    try:
        return load_lr_model(model_dir)
    except ParamsError as e:
        raise CrossCorpusError(str(e)) from e


def _conf_lines(text: str) -> list[str]:
    return sorted(ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip())


def check_mfcc_conf(model_text: str | None, data_dir: Path, model_where: str) -> None:
    """The target's MFCC must be made with the model's MFCC config (when both are known)."""
    mine = data_dir / "conf" / "mfcc.conf"
    if model_text and mine.is_file() and _conf_lines(model_text) != _conf_lines(mine.read_text()):
        raise CrossCorpusError(f"{data_dir}: its MFCC were made with {mine} ({' '.join(_conf_lines(mine.read_text()))})"
                               f" but {model_where} takes MFCC made with {' '.join(_conf_lines(model_text))}: "
                               "make the target's features with the source's config")


def _need(data_dir: Path, files, what: str) -> None:
    for f in files:
        if not (data_dir / f).is_file():
            raise CrossCorpusError(f"{data_dir / f} does not exist: {what} needs it (make the target's features "
                                   "as stage 2 does, with the source's configs)")


def _net_inputs(net, ck: dict, model_path: Path, data_dir: Path, what: str):
    """(front-end, source, fallback source) of a network over a data dir's features."""
    front = type(net).frontend(ck["config"], ck.get("extra") or {}, model_path.parent)
    _need(data_dir, front.data_requirements, f"{front.describe()} of {model_path} ({what})")
    if front.kind == "mfcc_vad":
        check_mfcc_conf(front._mfcc_text, data_dir, str(model_path))
    return front, front.data_source(data_dir), front.fallback_source(data_dir)


def xvectors(model_dir: Path, data_dir: Path, utts: list[str], device: str = "cpu"
             ) -> tuple[list[str], np.ndarray]:
    """(kept utts, x-vectors) of ``utts`` of ``data_dir`` by the x-vector model in
    ``model_dir``, as stage 4 extracts them (on ``device``; inputs follow the model)."""
    from ..extract import extract_embeddings
    from ..nnet.cpu_embedder import for_cpu_extraction
    from ..train.checkpoint import load_model

    path = Path(model_dir) / "final.pt"
    net, ck = load_model(path, device)
    _, src, raw = _net_inputs(net, ck, path, data_dir, "the x-vectors of the frozen system")
    ec = ck["config"]["extract"]
    pairs = list(extract_embeddings(for_cpu_extraction(net), src, utts, chunk_frames=ec["chunk_frames"],
                                    batch_frames=ec["batch_frames"], min_frames=ec["min_frames"], raw_source=raw))
    if not pairs:
        raise CrossCorpusError(f"{data_dir}: no utterance gave an x-vector (see the messages above)")
    return [u for u, _ in pairs], np.stack([np.asarray(e, dtype=np.float64) for _, e in pairs])


def network_posteriors(fdir: Path, data_dir: Path, utts: list[str], device: str = "cpu"
                       ) -> tuple[list[str], np.ndarray, list[str]]:
    """(kept utts, posteriors, classes) of a network system's final model (on ``device``)."""
    from ..train.checkpoint import load_model
    from .nnet import standardise

    path = fdir / "final.pt"
    net, ck = load_model(path, device)
    extra = ck.get("extra") or {}
    classes = [str(c) for c in (extra.get("classes") or ck["labels"])]
    raw = None
    if extra.get("features") == "gemaps":
        from ..features.network_input import FeatureSource

        _need(data_dir, ["gemaps_lld.scp"], f"the GeMAPS network {path}")
        src = FeatureSource(data_dir / "gemaps_lld.scp")
        if extra.get("gemaps_mean") is not None:
            standardise(src, np.asarray(extra["gemaps_mean"]), np.asarray(extra["gemaps_std"]))
    else:
        _, src, raw = _net_inputs(net, ck, path, data_dir, "the network's input")
    from ..extract import utterance_posteriors

    keys, post = utterance_posteriors(net, src, utts, raw_source=raw,
                                      min_frames=int(ck["config"]["extract"]["min_frames"]))
    return list(keys), np.asarray(post, dtype=np.float64), classes


def backend_inputs(system: str, meta: dict, fdir: Path, data_dir: Path, utts: list[str], device: str = "cpu"
                   ) -> tuple[list[str], np.ndarray]:
    """(kept utts, inputs) of an LR system's back-end for the target utterances."""
    spec = system_spec(system)
    if spec.method == REFERENCE:
        from .reference import feature_files, load_vectors

        _need(data_dir, [f.name for f in feature_files(system, data_dir)], f"{system}")
        if spec.features == MFCC_STATS:
            rec = json.loads((fdir / "final.json").read_text())
            src_conf = Path(rec["emo_dir"]) / "all" / "conf" / "mfcc.conf"
            if src_conf.is_file():
                check_mfcc_conf(src_conf.read_text(), data_dir, f"{system} (trained on {src_conf})")
        X, keep = load_vectors(system, [data_dir], utts, f"{data_dir}")
        return [utts[i] for i in keep], X
    from ..inference import find_recipe_path

    return xvectors(find_recipe_path(meta["xvector_model"], fdir), data_dir, utts, device)


def standardise_inputs(X: np.ndarray, stats: dict) -> np.ndarray:
    """The target's inputs standardised on their own mean and std (no labels), then
    put on the source training inputs' scale (``stats``: their mean and std)."""
    X = np.asarray(X, dtype=np.float64)
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)   # a constant dimension maps to the source mean
    return (X - mu) / sd * np.asarray(stats["std"]) + np.asarray(stats["mean"])


# --------------------------------------------------------------- evaluation
def _write_scores(out: Path, suffix: str, utts, post, truth, pred) -> None:
    write_lines(out / f"posteriors{suffix}",
                (u + " " + " ".join(f"{x:.6f}" for x in row) for u, row in zip(utts, post)))
    write_lines(out / f"predictions{suffix}.txt", (f"{u} {t} {p}" for u, t, p in zip(utts, truth, pred)))


def evaluate(system_dir: str | Path, data_dir: str | Path, out_dir: str | Path, *, label_map: str | None = None,
             standardise: bool = False, target: str | None = None, device: str = "cpu") -> dict:
    """Score the final model of ``system_dir`` on ``data_dir`` (a data dir with
    ``utt2emo``) into ``out_dir``: ``posteriors`` (every class, ``classes.txt``
    order), ``predictions.txt`` (utt true pred), with ``standardise`` also their
    ``*_standardised`` versions (LR systems), and ``metrics.json`` last (weighted
    and unweighted F1/accuracy as stage 5 reports them; ``standardised`` inside).
    Returns the metrics."""
    t0 = time.time()
    fdir = final_dir(system_dir)
    rec = json.loads((fdir / "final.json").read_text())
    system, classes = rec["system"], list(rec["classes"])
    try:
        lr = system_spec(system).logistic_regression
    except ValueError as e:
        raise CrossCorpusError(f"{fdir / 'final.json'}: {e}") from None
    data_dir, out = Path(data_dir), Path(out_dir)
    d = DataDir(data_dir)
    if not d.has("utt2emo"):
        raise CrossCorpusError(f"{data_dir}: has no utt2emo (emotion labels)")
    lmap = read_label_map(label_map) if label_map else None
    kept, dropped = map_labels(d.utt2emo, classes, lmap, where=f"{data_dir}/utt2emo", map_file=label_map)
    utts = [u for u in d.utts if u in kept]
    allowed = [c for c in classes if c in set(kept.values())]
    if standardise and not lr:
        log.warning("%s: a network has no back-end input to standardise; scored plainly only", system)
    log.info("%s (%s, trained on %s) on %s: %d utterances, classes %s%s", system, rec["train_data"], rec["corpus"],
             data_dir, len(utts), " ".join(allowed),
             f"; left out by the label map: {dropped}" if dropped else "")
    std_post = None
    if lr:
        model, meta = read_lr_model(fdir)
        keys, X = backend_inputs(system, meta, fdir, data_dir, utts, device)
        post = np.asarray(model.predict_proba(X), dtype=np.float64)
        if standardise:
            stats = json.loads((fdir / "input_stats.json").read_text())
            std_post = np.asarray(model.predict_proba(standardise_inputs(X, stats)), dtype=np.float64)
    else:
        keys, post, net_classes = network_posteriors(fdir, data_dir, utts, device)
        if net_classes != classes:
            raise CrossCorpusError(f"{fdir}: final.pt's classes {net_classes} differ from final.json's {classes}")
    if len(keys) < len(utts):
        log.warning("%s: %d utterance(s) could not be scored and are left out, e.g. %s", data_dir,
                    len(utts) - len(keys), sorted(set(utts) - set(keys))[:3])
    truth = [kept[u] for u in keys]
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    write_lines(out / "classes.txt", classes)
    pred = decide(post, classes, allowed)
    _write_scores(out, "", keys, post, truth, pred)
    m = classification_metrics(truth, pred, labels=allowed)
    m.update(system=system, train_data=rec["train_data"], source_corpus=rec["corpus"],
             system_dir=str(Path(system_dir)), target_corpus=target or data_dir.name, target_data=str(data_dir),
             label_map=label_map, left_out=dropped, decision_classes=allowed, seconds=round(time.time() - t0, 1))
    if std_post is not None:
        spred = decide(std_post, classes, allowed)
        _write_scores(out, "_standardised", keys, std_post, truth, spred)
        m["standardised"] = classification_metrics(truth, spred, labels=allowed)
    with atomic_open(out / "metrics.json", "w") as f:
        json.dump(m, f, indent=1)
    log.info("%s %s (%s) -> %s: weighted F1 %.2f%%, UA %.2f%%, accuracy %.2f%% on %d utts%s", system,
             rec["train_data"], rec["corpus"], m["target_corpus"], 100 * m["weighted_f1"],
             100 * m["unweighted_accuracy"], 100 * m["accuracy"], m["n_test"],
             f"; standardised: weighted F1 {100 * m['standardised']['weighted_f1']:.2f}%"
             if "standardised" in m else "")
    return m
