"""Network emotion systems: random-init (GeMAPS LLDs or MFCC) and fine-tuned x-vectors.

Training itself is the generic trainer of :mod:`pyxv.train.trainer`
(``train_classifier``) on any registered speaker encoder (:mod:`pyxv.nnet.registry`;
the paper's ResNet x-vector for the random-init systems); this module supplies what
is emotion-specific:

* inputs: the pre-trained encoder's own front-end (for the ResNet: MFCC with sliding
  CMN + VAD frame removal, its ``data.cmn_window``/``apply_vad``; for GE2E: its mel
  spectrogram), MFCC for random-init MFCC, or frame-level GeMAPS LLDs (T x 25,
  standardised with the training mean/std, no VAD);
* options: ``nnet``, overridden by ``finetune_by_type[<encoder type>]`` when
  fine-tuning an encoder other than the ResNet, turned into the trainer's config by
  :func:`pyxv.emotion.config.trainer_config`;
* training set: the fold's training utterances (+ augmented copies for clean+aug;
  ``nnet.epoch_size: clean`` keeps an epoch as long as the clean set's);
* dev: the protocol's dev set, else speakers carved from the training speakers
  (``nnet.dev_fraction``; their augmented copies leave training too; 0: no dev,
  the last epoch is kept);
* early stopping on dev weighted F1 (``nnet.patience``), the best epoch is kept;
* fine-tuning: all layers but the speaker output layer start from ``final.pt``; a new
  emotion output layer (``nnet.loss``, default softmax); ``nnet.pretrained_lr_mult``
  scales the lr of the pre-trained layers; ``nnet.freeze: embedding`` trains only the
  layers after the x-vector.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

from ..metrics.classification import weighted_f1
from .config import nnet_options, trainer_config
from .data import LabeledSet, Split
from .spec import FINETUNE, GEMAPS, SystemSpec, system_spec

log = logging.getLogger("pyxv.emotion")


class FeatureMismatchError(ValueError):
    """Pre-trained model and data features differ (dims or feature config)."""


# ---------------------------------------------------------------- feature sources
def standardise(src, mean: np.ndarray, std: np.ndarray) -> None:
    """Make a FeatureSource return ``(x - mean) / std`` per dimension (GeMAPS LLDs,
    whose descriptors have very different scales) from ``src[utt]``: for whole
    utterances (scoring); training chunks take :func:`standardised_source`."""
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    raw_load = src.load

    def load(u):
        return (np.nan_to_num(raw_load(u)) - mean) / std
    src.load = load
    src._cache.clear()


def standardised_source(src, utts, mean: np.ndarray, std: np.ndarray, work: Path, name: str):
    """A FeatureSource over ``(x - mean) / std`` of ``src``'s ``utts``, written once to
    ``work/<name>.std.*``. Training reads chunks of such prepared archives in place
    (:meth:`pyxv.features.network_input.FeatureSource.read_chunks`), so the transform has to be in
    the archive: a wrapped ``load`` (:func:`standardise`) would be bypassed there."""
    from ..features.network_input import FeatureSource, write_network_input

    m, s = mean.astype(np.float32), std.astype(np.float32)
    write_network_input(sorted(u for u in set(utts) if u in src),
                        lambda u: (np.nan_to_num(src.load(u)) - m) / s, work, f"{name}.std")
    return FeatureSource(work / f"{name}.std.scp", utt2num_frames=work / f"{name}.std.utt2num_frames")


def gemaps_stats(src, utts, max_utts: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of LLD frames over (up to ``max_utts``) training utts."""
    utts = [u for u in utts if u in src]
    if len(utts) > max_utts:
        utts = list(np.random.default_rng(seed).choice(utts, max_utts, replace=False))
    X = np.concatenate([src.load(u) for u in utts])
    X = np.nan_to_num(X)
    return X.mean(0), np.maximum(X.std(0), 1e-3)


def make_source(kind: str, emo_dir: Path, utts: set[str], work: Path, name: str, *,
                cmn_window: int = 300, apply_vad: bool = True, front=None):
    """FeatureSource over ``<emo>/all`` and ``<emo>/all_aug`` for ``utts``.

    kind 'gemaps': gemaps_lld.scp as is; otherwise the network input of ``front``
    (a :mod:`pyxv.features.frontend` front-end: the pre-trained encoder's), by
    default MFCC + VAD prepared like the x-vector input. Merged scps and
    computed features go to ``work/<name>.*``.
    """
    from ..features.frontend import MfccVadFrontEnd, merged_scp
    from ..features.network_input import FeatureSource

    dirs = [emo_dir / "all", emo_dir / "all_aug"]
    work.mkdir(parents=True, exist_ok=True)
    if kind == "gemaps":
        scp = merged_scp(work / f"{name}.gemaps_lld.scp", [d / "gemaps_lld.scp" for d in dirs], utts)
        if scp is None:
            raise FileNotFoundError(f"no GeMAPS LLDs (gemaps_lld.scp) for the {name} utterances in {dirs[0]}")
        return FeatureSource(scp)
    front = front or MfccVadFrontEnd(cmn_window=cmn_window, apply_vad=apply_vad)
    return front.source_for(dirs, utts, work, name)


# -------------------------------------------------------------------- dev carving
def carve_dev(train: LabeledSet, fraction: float, seed: int) -> tuple[LabeledSet, LabeledSet]:
    """Split training speakers: ~``fraction`` of them (at least 1, leaving at least 1)
    become dev (clean utterances only); their augmented copies leave training."""
    spks = sorted(train.speakers)
    if len(spks) < 2:
        raise ValueError(f"cannot carve a dev set by speaker from {len(spks)} training speaker(s)")
    n = min(len(spks) - 1, max(1, int(round(fraction * len(spks)))))
    rng = np.random.default_rng(seed)
    dev_spk = set(rng.choice(spks, n, replace=False).tolist())
    tr, dv = LabeledSet(), LabeledSet()
    for i, u in enumerate(train.utts):
        if train.spks[i] in dev_spk:
            if not train.aug[i]:
                dv.add(u, train.labels[i], train.spks[i])
        else:
            tr.add(u, train.labels[i], train.spks[i], train.orig[i], train.aug[i])
    return tr, dv


# ------------------------------------------------------------------ configuration
def clean_epoch_steps(train: LabeledSet, source, n: dict) -> int:
    """Steps of an epoch over the clean training utterances' frames (``nnet.epoch_size:
    clean``): with augmented copies in the training set they are drawn from, but
    clean+aug trains as many steps as clean."""
    from ..train.data import default_steps

    lengths = source.lengths
    clean = [u for u, a in zip(train.utts, train.aug) if not a and u in lengths]
    return default_steps((lengths[u] for u in clean), int(n["batch_size"]), int(n["chunk_min"]),
                         int(n["chunk_max"]))


def pretrained_model(cfg: dict, spec: SystemSpec) -> Path:
    """The ``final.pt`` of the x-vector model a fine-tuned system starts from."""
    return Path(cfg["xvector_models"][spec.xvector_model]) / "final.pt"


def architecture_config(cfg: dict) -> tuple[dict, str]:
    """The x-vector config whose ``model`` section builds the random-init networks:
    ``nnet.architecture`` (a YAML) or the clean pre-trained model's own config.
    Returns (config, where it came from)."""
    from ..nnet.config import load_config
    from ..train import checkpoint as ckpt

    arch = cfg["nnet"].get("architecture")
    if arch:
        return load_config(arch), str(arch)
    p = Path(cfg["xvector_models"]["clean"])
    if (p / "final.pt").is_file():
        own = copy.deepcopy(ckpt.load(p / "final.pt")["config"])
        mtype = own["model"].get("type", "resnet")
        if mtype != "resnet":
            raise ValueError(f"the random-init systems are the paper's ResNet, but the clean x-vector model "
                             f"{p / 'final.pt'} is a '{mtype}' encoder: name a ResNet config in nnet.architecture "
                             f"(steps/train_emotion.sh --architecture conf/xvector_demo.yaml)")
        return own, str(p / "final.pt")
    if (p / "config.yaml").is_file():
        return load_config(p / "config.yaml"), str(p / "config.yaml")
    raise FileNotFoundError(f"no network architecture: nnet.architecture is unset and {p} has no final.pt "
                            f"or config.yaml (run stage 3, or set nnet.architecture in the emotion config)")


def feature_confs(model_path: Path, ck: dict | None) -> dict[str, str]:
    """The MFCC/VAD config texts a model was trained with: from ``final.pt``'s ``extra``,
    else the ``mfcc.conf``/``vad.conf`` copies beside it."""
    extra = (ck or {}).get("extra") or {}
    out = {}
    for name in ("mfcc.conf", "vad.conf"):
        text = extra.get(name) or extra.get(name.replace(".", "_"))
        if not text and (Path(model_path).parent / name).is_file():
            text = (Path(model_path).parent / name).read_text()
        if text:
            out[name] = text
    return out


def _conf_lines(text: str) -> list[str]:
    return sorted(line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip())


def check_features(model_path: Path, ck: dict, dim: int, emo_dir: Path, compare_mfcc: bool = True) -> None:
    """Error naming both when the data's features do not fit the pre-trained model:
    the input dimension, and (when both are recorded) the MFCC config
    (``final.pt`` extra or ``<model-dir>/mfcc.conf`` vs ``<emo>/all/conf/mfcc.conf``)."""
    want = ck["config"]["model"]["input_dim"]
    if want != dim:
        raise FeatureMismatchError(f"pre-trained model {model_path} takes {want}-dim input features but "
                                   f"{emo_dir}/all/feats.scp has {dim}-dim features")
    if not compare_mfcc:
        return
    theirs = feature_confs(model_path, ck).get("mfcc.conf")
    mine_p = emo_dir / "all" / "conf" / "mfcc.conf"
    if theirs and mine_p.is_file() and _conf_lines(theirs) != _conf_lines(mine_p.read_text()):
        raise FeatureMismatchError(f"pre-trained model {model_path} was trained on MFCC made with "
                                   f"{' '.join(_conf_lines(theirs))} but the features of {emo_dir} were made "
                                   f"with {mine_p}: {' '.join(_conf_lines(mine_p.read_text()))}")


# --------------------------------------------------------------------- inference
def utterance_posteriors(net, source, utts: list[str], max_frames: int = 0) -> tuple[list[str], np.ndarray]:
    """(kept utts, (N, K) softmax posteriors) of whole utterances (the first
    ``max_frames`` frames if > 0), through :func:`pyxv.extract.utterance_posteriors`,
    on the network's own device (the trainer's: a GPU when it trained on one)."""
    from ..extract import utterance_posteriors as post

    src = source
    if max_frames > 0:
        class _Cut:
            def __getitem__(self, u):
                return source[u][:max_frames]
        src = _Cut()
    return post(net, src, utts)


# ------------------------------------------------------------------------ system
def run_nnet_system(system: str, split: Split, train: LabeledSet, dev: LabeledSet | None, test: LabeledSet,
                    classes: list[str], emo_dir: Path, cfg: dict, fold_dir: Path, use_gpu: bool = False):
    """Train one network system on one fold; returns (scored test set, posteriors (N, C)),
    or (None, None) for a final model (``test`` None: nothing is scored).
    ``use_gpu``: train (and compute the dev and test posteriors) on a GPU, else on the CPU.

    Writes ``fold_dir/final.pt`` (the trainer's model file: network, config, classes and,
    in ``extra``, the feature kind and GeMAPS normalisation), ``config.yaml``,
    ``log/history.json``."""
    from ..nnet.registry import encoder_class
    from ..train import checkpoint as ckpt
    from ..train.trainer import train_classifier

    spec = system_spec(system)
    init_from, ck, front, etype = None, None, None, None
    if spec.method == FINETUNE:
        init_from = pretrained_model(cfg, spec)
        ck = ckpt.load(init_from)
        base = copy.deepcopy(ck["config"])
        where = str(init_from)
        etype = base["model"].get("type", "resnet")
        # The pre-trained encoder's own front-end (MFCC + VAD for the ResNet, mel for GE2E).
        front = encoder_class(etype).frontend(base, ck.get("extra") or {}, init_from.parent)
    else:
        base, where = architecture_config(cfg)
    n = nnet_options(cfg, etype)
    kind = "gemaps" if spec.features == GEMAPS else (
        "mfcc" if front is None or front.kind == "mfcc_vad" else front.kind)
    if dev is None and n["dev_fraction"] > 0:
        train, dev = carve_dev(train, n["dev_fraction"], int(cfg["seed"]))
        log.info("%s: no dev set in the protocol; %d training speakers' %d clean utterances carved out as dev "
                 "(speakers: %s)", split.name, len(dev.speakers), len(dev), " ".join(sorted(dev.speakers)))
    elif dev is None:
        log.info("%s: no dev set (nnet.dev_fraction 0): all training speakers train, the last epoch is kept",
                 split.name)
    dc = base["data"]
    cmn, vad = int(dc.get("cmn_window", 300)), bool(dc.get("apply_vad", True))
    work = fold_dir / "feats"
    dev_utts_all = set(dev.utts) if dev is not None else set()
    tr_src = make_source(kind, emo_dir, set(train.utts), work, "train", cmn_window=cmn, apply_vad=vad, front=front)
    # A final model (test None, no dev) scores nothing while it trains.
    eval_utts = dev_utts_all | (set(test.utts) if test is not None else set())
    ev_src = make_source(kind, emo_dir, eval_utts, work, "eval", cmn_window=cmn, apply_vad=vad,
                         front=front) if eval_utts else None
    extra = {"emotion_system": system, "features": kind, "classes": list(classes), "cmn_window": cmn,
             "apply_vad": vad, "architecture_from": where}
    if kind == "gemaps":
        if n["gemaps_norm"]:
            mean, std = gemaps_stats(tr_src, train.utts, seed=int(cfg["seed"]))
            tr_src = standardised_source(tr_src, train.utts, mean, std, work, "train")
            if ev_src is not None:
                standardise(ev_src, mean, std)
            extra.update(gemaps_mean=mean.tolist(), gemaps_std=std.tolist())
    dim = tr_src.dim
    if ck is not None:
        check_features(init_from, ck, dim, emo_dir, compare_mfcc=kind == "mfcc")
    tcfg = trainer_config(base, cfg, n)
    tcfg["model"]["input_dim"] = dim
    if not n["steps_per_epoch"] and n["epoch_size"] == "clean" and any(train.aug):
        tcfg["train"]["steps_per_epoch"] = clean_epoch_steps(train, tr_src, n)
    if kind == "mfcc":
        # The feature confs go with the model (inference recomputes identical features):
        # the pre-trained model's, else those the emotion data were made with.
        if ck is not None:
            extra.update(feature_confs(init_from, ck))
        for name in ("mfcc.conf", "vad.conf"):
            p = emo_dir / "all" / "conf" / name
            if name not in extra and p.is_file():
                extra[name] = p.read_text()

    dev_wf1 = None
    if dev is not None:
        dev = dev.subset([i for i, u in enumerate(dev.utts) if u in ev_src])
        dev_utts, dev_labels = dev.utts, dev.labels
        vmax = int(n["valid_max_frames"])

        def dev_wf1(net, epoch):
            keys, post = utterance_posteriors(net, ev_src, dev_utts, vmax)
            net.train()
            truth = dict(zip(dev_utts, dev_labels))
            return weighted_f1([truth[u] for u in keys], [classes[i] for i in post.argmax(1)])

    utt2label = dict(zip(train.utts, train.labels))
    log.info("%s: %s network (%s features, %d dims) on %d training utts (%d augmented), dev %d utts, from %s%s",
             split.name, system, kind, dim, len(train), sum(train.aug), len(dev) if dev is not None else 0,
             "init " if init_from else "architecture ", where)
    res = train_classifier(tr_src, utt2label, tcfg, fold_dir, labels=classes, init_from=init_from,
                           dev=dev_wf1, valid_utts=[], extra=extra, log_file=None, progress=False,
                           use_gpu=use_gpu)
    # Epoch checkpoints are only for resuming; the fold keeps final.pt (best dev epoch).
    import shutil
    shutil.rmtree(fold_dir / "checkpoints", ignore_errors=True)
    (fold_dir / "best.pt").unlink(missing_ok=True)
    if test is None:
        shutil.rmtree(work, ignore_errors=True)
        return None, None
    keys, post = utterance_posteriors(res.model, ev_src, [u for u in test.utts if u in ev_src])
    if len(keys) < len(test):
        missing = sorted(set(test.utts) - set(keys))
        log.warning("%s: %d test utterance(s) have no usable features and are skipped, e.g. %s", split.name,
                    len(missing), missing[:3])
    index = {u: i for i, u in enumerate(test.utts)}
    test = test.subset([index[u] for u in keys])
    shutil.rmtree(work, ignore_errors=True)
    return test, post
