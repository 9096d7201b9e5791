"""conf/emotion.yaml: options of the six emotion systems, with per-corpus profiles.

The file lists what it changes from :data:`DEFAULTS`; ``profiles: {<name>: {...}}``
holds overrides applied on top when the profile is selected (by default the
profile named like the corpus, e.g. ``demo`` for ``data/demo``). Unknown keys
are an error naming the key.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Mapping

import yaml

DEFAULTS: dict[str, Any] = {
    "seed": 777,
    "classes": None,            # null: the corpus's classes (sorted labels of <emo>/all/utt2emo)
    "xvector_models": {"clean": "exp/xvector_clean", "aug": "exp/xvector_aug"},
    "lr": {
        "center": True,
        "transform": "none",    # none | whiten | lda
        "lda_dim": None,        # null: classes - 1
        "length_norm": True,
        "C_grid": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0],
        "cv_folds": 5,          # inner GroupKFold by speaker when the protocol has no dev set
        "max_iter": 2000,
    },
    "nnet": {
        # Network of the random-init systems: a x-vector YAML (model: section is
        # used), or null for the pre-trained clean x-vector model's own config.
        "architecture": None,
        "epochs": 12,           # fixed schedule, last epoch kept (see patience, dev_fraction)
        "steps_per_epoch": 0,   # 0: one pass over the training frames in chunks (see epoch_size)
        # Frames an epoch passes over when steps_per_epoch is 0: 'clean' (the clean
        # training utterances; their augmented copies are drawn from but do not
        # lengthen training, so clean+aug costs what clean costs) or 'all'.
        "epoch_size": "clean",
        "batch_size": 32,
        "lr": 0.003,
        "weight_decay": 1.0e-4,
        "warmup_steps": 50,
        "lr_schedule": None,    # exp | cosine | constant after warm-up; null: the x-vector config's
        "chunk_min": 100,
        "chunk_max": 250,
        "loss": "softmax",      # emotion output layer
        "pretrained_lr_mult": 1.0,  # fine-tuning: lr multiplier of pre-trained layers
        "head_only_epochs": 0,  # fine-tuning: the first N of `epochs` train the emotion layer alone (LP-FT)
        "freeze": "none",       # none | embedding (fine-tune the emotion layer only)
        "patience": 0,          # > 0: early stopping on dev weighted F1 (epochs)
        "dev_fraction": 0.0,    # no dev in the protocol: this share of training speakers (0: none)
        "average_last": 0,      # without a dev set: keep the mean weights of the last N epochs (0, 1: the last)
        "gemaps_norm": True,    # standardise GeMAPS LLDs with training mean/std
        "min_frames": 20,       # shorter utterances are padded by repetition in training
        "valid_max_frames": 1000,
        "num_threads": 1,
    },
    # Fine-tuning an encoder of another type than the paper's ResNet
    # (pyxv.nnet.registry): nnet options that replace the ones above for it.
    "finetune_by_type": {
        "ge2e_lstm": {"chunk_min": 160, "chunk_max": 160, "lr": 0.003, "pretrained_lr_mult": 0.033,
                      "epochs": 12, "patience": 0, "dev_fraction": 0.0, "warmup_steps": 20,
                      "lr_schedule": "constant"},
    },
}


class EmotionConfigError(ValueError):
    pass


def _merge(base: dict, over: Mapping, where: str, prefix: str = "") -> None:
    for k, v in over.items():
        key = f"{prefix}{k}"
        if prefix == "finetune_by_type.":  # any encoder type; its keys are nnet keys
            if not isinstance(v, Mapping):
                raise EmotionConfigError(f"{where}{key}: expected a mapping of nnet options")
            over = dict(base.get(k) or {})
            probe = copy.deepcopy(DEFAULTS["nnet"])
            _merge(probe, v, where, key + ".")
            over.update({kk: probe[kk] for kk in v})
            base[k] = over
            continue
        if k not in base:
            raise EmotionConfigError(f"{where}{key}: unknown key (known: {', '.join(base)})")
        if isinstance(base[k], dict) and k != "xvector_models":
            if not isinstance(v, Mapping):
                raise EmotionConfigError(f"{where}{key}: expected a mapping")
            _merge(base[k], v, where, key + ".")
        elif isinstance(base[k], dict):
            if not isinstance(v, Mapping):
                raise EmotionConfigError(f"{where}{key}: expected a mapping")
            base[k].update(v)
        else:
            d = base[k]
            if isinstance(d, bool) and not isinstance(v, bool):
                raise EmotionConfigError(f"{where}{key}: expected true/false, got {v!r}")
            if isinstance(d, (int, float)) and not isinstance(d, bool) and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise EmotionConfigError(f"{where}{key}: expected a number, got {v!r}")
            base[k] = float(v) if isinstance(d, float) else v


def load_emotion_config(path: str | os.PathLike | None, profile: str | None = None,
                        overrides: Mapping | None = None) -> dict:
    """Defaults <- file <- profiles[profile] (if present) <- overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    raw: dict = {}
    where = f"{path}: " if path else ""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise EmotionConfigError(f"{path}: config file does not exist") from None
        if not isinstance(raw, Mapping):
            raise EmotionConfigError(f"{path}: expected a mapping")
    raw = dict(raw)
    profiles = raw.pop("profiles", None) or {}
    _merge(cfg, raw, where)
    if profile and profile in profiles:
        _merge(cfg, profiles[profile] or {}, f"{where}profiles.{profile}: ")
    if overrides:
        _merge(cfg, overrides, "override: ")
    if cfg["lr"]["transform"] not in ("none", "whiten", "lda"):
        raise EmotionConfigError(f"{where}lr.transform: '{cfg['lr']['transform']}' is not one of none, whiten, lda")
    if cfg["nnet"]["epoch_size"] not in ("clean", "all"):
        raise EmotionConfigError(f"{where}nnet.epoch_size: '{cfg['nnet']['epoch_size']}' is not one of clean, all")
    if cfg["nnet"]["freeze"] not in ("none", "embedding"):
        raise EmotionConfigError(f"{where}nnet.freeze: '{cfg['nnet']['freeze']}' is not one of none, embedding")
    cfg["profile"] = profile if profile in profiles else None
    return cfg
