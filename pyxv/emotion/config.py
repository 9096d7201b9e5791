"""conf/emotion.yaml: options of the emotion systems, with per-corpus profiles.

The file lists what it changes from :data:`DEFAULTS`; ``profiles: {<name>: {...}}``
holds overrides applied on top when the profile is selected (by default the
profile named like the corpus, e.g. ``demo`` for ``data/demo``). The checking is
:class:`pyxv.config.Schema`'s: an unknown key or a value of the wrong type is a
:class:`~pyxv.config.ConfigError` naming the key.

The ``nnet`` section is an override of the trainer's config (:mod:`pyxv.nnet.config`)
for the emotion networks: each option that sets a trainer key names it in
:data:`NNET_OPTIONS`, is checked with that key's type and choices, and is copied
over by :func:`trainer_config`, which also sets the seed and
:data:`EMOTION_TRAINING`. ``finetune_by_type[<encoder type>]`` overrides ``nnet``
options when an encoder of that type is fine-tuned (:func:`nnet_options`).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from ..config import ConfigError, Schema, read_yaml
from ..nnet.config import CHOICES as TRAINER_CHOICES
from ..nnet.config import DEFAULTS as TRAINER_DEFAULTS
from ..nnet.config import validate_config

# The nnet options: default, and the trainer config key the option sets (None: the
# emotion systems' own). Taking one more trainer key is one line here.
NNET_OPTIONS: dict[str, tuple[Any, str | None]] = {
    # Network of the random-init systems: a x-vector YAML (model: section is
    # used), or null for the pre-trained clean x-vector model's own config.
    "architecture": (None, None),
    "epochs": (12, "train.epochs"),                 # fixed schedule, last epoch kept (see patience, dev_fraction)
    "steps_per_epoch": (0, "train.steps_per_epoch"),  # 0: one pass over the training frames in chunks (epoch_size)
    # Frames an epoch passes over when steps_per_epoch is 0: 'clean' (the clean
    # training utterances; their augmented copies are drawn from but do not
    # lengthen training, so clean+aug costs what clean costs) or 'all'.
    "epoch_size": ("clean", None),
    "batch_size": (32, "train.batch_size"),
    "lr": (0.003, "train.lr"),
    "weight_decay": (1.0e-4, "train.weight_decay"),
    "warmup_steps": (50, "train.warmup_steps"),
    "lr_schedule": (None, "train.lr_schedule"),     # exp | cosine | constant after warm-up; null: the x-vector config's
    "chunk_min": (100, "data.chunk_min"),
    "chunk_max": (250, "data.chunk_max"),
    "loss": ("softmax", "model.loss"),              # emotion output layer
    "pretrained_lr_mult": (1.0, "train.pretrained_lr_mult"),  # fine-tuning: lr multiplier of pre-trained layers
    "head_only_epochs": (0, "train.head_only_epochs"),  # fine-tuning: the first N of `epochs` train the emotion layer alone (LP-FT)
    "freeze": ("none", "train.freeze"),             # none | embedding (fine-tune the emotion layer only)
    "patience": (0, "train.patience"),              # > 0: early stopping on dev weighted F1 (epochs)
    "dev_fraction": (0.0, None),                    # no dev in the protocol: this share of training speakers (0: none)
    "average_last": (0, "train.average_last"),      # without a dev set: keep the mean weights of the last N epochs (0, 1: the last)
    "gemaps_norm": (True, None),                    # standardise GeMAPS LLDs with training mean/std
    "min_frames": (20, "data.min_frames"),          # shorter utterances are padded by repetition in training
    "valid_max_frames": (1000, "data.valid_max_frames"),
    "num_threads": (1, None),
}
# nnet option -> the trainer config key it sets
TRAINER_KEYS: dict[str, str] = {k: key for k, (_, key) in NNET_OPTIONS.items() if key}

# What every emotion network trains with, whatever the options: any number of
# utterances per class, classes drawn evenly, a log line (and pre-emption point)
# every 10 steps, one epoch checkpoint (only for resuming; the fold keeps final.pt).
EMOTION_TRAINING: dict[str, Any] = {
    "data.min_utts_per_class": 1,
    "data.sampling": "balanced",
    "train.log_interval": 10,
    "train.keep_checkpoints": 1,
}
# model.margin for an output layer with a margin (softmax keeps the base config's)
LOSS_MARGIN = {"asoftmax": 2.0, "amsoftmax": 0.2, "aamsoftmax": 0.2}

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
    "nnet": {k: default for k, (default, _) in NNET_OPTIONS.items()},
    # Fine-tuning an encoder of another type than the paper's ResNet
    # (pyxv.nnet.registry): nnet options that replace the ones above for it.
    "finetune_by_type": {
        "ge2e_lstm": {"chunk_min": 160, "chunk_max": 160, "lr": 0.003, "pretrained_lr_mult": 0.033,
                      "epochs": 12, "patience": 0, "dev_fraction": 0.0, "warmup_steps": 20,
                      "lr_schedule": "constant"},
    },
}


def _trainer_default(key: str) -> Any:
    section, name = key.split(".")
    return TRAINER_DEFAULTS.get(section, {}).get(name)


SCHEMA = Schema(
    DEFAULTS,
    choices={"lr.transform": ("none", "whiten", "lda"), "nnet.epoch_size": ("clean", "all"),
             **{f"nnet.{k}": TRAINER_CHOICES[key] for k, key in TRAINER_KEYS.items() if key in TRAINER_CHOICES}},
    nullable={"classes": ["label"], "lr.lda_dim": 1, "nnet.architecture": "conf/xvector.yaml",
              **{f"nnet.{k}": _trainer_default(key) for k, key in TRAINER_KEYS.items()
                 if NNET_OPTIONS[k][0] is None}},
    free={"xvector_models": "exp/xvector"},   # finetune_by_type: checked as nnet options by _merge
)


def _merge(cfg: dict, over: Mapping, where: str) -> None:
    """Merge one layer (file, profile, overrides) into ``cfg``; each encoder type's
    ``finetune_by_type`` options are merged key by key and checked as nnet options."""
    if not isinstance(over, Mapping):
        raise ConfigError(f"{where}expected a mapping")
    over = dict(over)
    by_type = over.pop("finetune_by_type", None)
    SCHEMA.merge(cfg, over, where=where)
    if by_type is None:
        return
    if not isinstance(by_type, Mapping):
        raise ConfigError(f"{where}finetune_by_type: expected a mapping of encoder types, got {by_type!r}")
    for etype, options in by_type.items():
        key = f"finetune_by_type.{etype}"
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}{key}: expected a mapping of nnet options")
        merged = dict(cfg["finetune_by_type"].get(etype) or {})
        merged.update(SCHEMA.partial("nnet", options, where=where, shown=key))
        cfg["finetune_by_type"][etype] = merged


def load_emotion_config(path: str | os.PathLike | None, profile: str | None = None,
                        overrides: Mapping | None = None) -> dict:
    """Defaults <- file <- profiles[profile] (if present) <- overrides."""
    cfg = SCHEMA.complete()
    where = f"{path}: " if path else ""
    raw = (read_yaml(path) if path else None) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping")
    raw = dict(raw)
    profiles = raw.pop("profiles", None) or {}
    _merge(cfg, raw, where)
    if profile and profile in profiles:
        _merge(cfg, profiles[profile] or {}, f"{where}profiles.{profile}: ")
    if overrides:
        _merge(cfg, overrides, "override: ")
    cfg["profile"] = profile if profile in profiles else None
    return cfg


def nnet_options(cfg: dict, encoder_type: str | None) -> dict:
    """``cfg['nnet']`` with the ``finetune_by_type`` overrides of the encoder being fine-tuned."""
    n = dict(cfg["nnet"])
    if encoder_type:
        n.update(cfg.get("finetune_by_type", {}).get(encoder_type) or {})
    return n


def trainer_config(base: dict, cfg: dict, n: dict | None = None) -> dict:
    """The trainer's config of an emotion network: the x-vector config ``base`` (its
    model) with the nnet options ``n`` (default ``cfg['nnet']``) over the keys
    :data:`TRAINER_KEYS` names (an option left null keeps the base's), the seed,
    :data:`EMOTION_TRAINING` and the loss's margin (:data:`LOSS_MARGIN`)."""
    # The options were checked against the trainer keys' types and choices when the config was read (SCHEMA).
    out = validate_config(base)
    n = n or cfg["nnet"]
    out["train"]["seed"] = cfg["seed"]
    for option, key in TRAINER_KEYS.items():
        if n.get(option) is not None:
            section, name = key.split(".")
            out[section][name] = n[option]
    for key, value in EMOTION_TRAINING.items():
        section, name = key.split(".")
        out[section][name] = value
    if out["model"]["loss"] in LOSS_MARGIN:
        out["model"]["margin"] = LOSS_MARGIN[out["model"]["loss"]]
    return out
