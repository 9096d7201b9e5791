"""YAML configuration of the x-vector model and its training, with validation.

A config is a nested mapping with the sections ``model``, ``data``, ``train``,
``extract`` and ``frontend``. ``model.type`` names the speaker encoder
(:mod:`pyxv.nnet.registry`; ``resnet``, the paper's, by default); the type fixes
the keys of ``model`` and ``frontend`` (its ``MODEL_DEFAULTS`` and
``FRONTEND_DEFAULTS``) and may change the defaults of the other sections
(``SECTION_DEFAULTS``). Every key has a default (:data:`DEFAULTS`, then the
type's); a YAML file only lists what it changes. The checking is
:class:`pyxv.config.Schema`'s: an unknown key or a value of the wrong type is a
:class:`~pyxv.config.ConfigError` naming the key (``train.lr: expected float, got 'fast'``).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Mapping

import yaml

from ..config import ConfigError, Schema, read_yaml
from .registry import encoder_class

SECTIONS = ("model", "data", "train", "extract", "frontend")

# The sections every encoder type shares (``model`` and ``frontend`` are the type's).
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "cmn_window": 300,           # sliding CMN window (frames); 0 disables CMN
        "apply_vad": True,           # drop unvoiced frames (vad.scp) before training
        "min_frames": 200,           # drop utterances with fewer voiced frames
        "min_utts_per_class": 8,     # drop speakers (classes) with fewer utterances
        "valid_per_class": 1,        # held-out validation utterances per speaker
        "max_valid": 1000,           # at most this many validation utterances
        "chunk_min": 200,            # random chunk length range (frames)
        "chunk_max": 400,
        "valid_max_frames": 1000,    # validation on the first N frames of each held-out utt
        "sampling": "balanced",      # balanced (speaker then utt) | proportional (utt)
        "cache_utts": 64,            # LRU cache of utterance matrices per process
    },
    "train": {
        "seed": 777,
        "epochs": 20,
        "steps_per_epoch": 0,        # optimizer steps; 0: about (voiced frames / mean chunk) / global batch
        "batch_size": 32,            # chunks per process; global batch = processes x batch_size
        "optimizer": "adam",         # adam | adamw | sgd
        "lr": 0.001,
        "lr_scale_ref_batch": 0,     # N > 0: lr x global batch / N (linear scaling rule); 0: lr as given
        "weight_decay": 1.0e-5,
        "momentum": 0.9,             # for sgd
        "warmup_steps": 1000,
        "lr_schedule": "exp",        # exp | cosine | constant (after warm-up)
        "final_lr_ratio": 0.01,      # lr at the last step / lr (exp and cosine)
        "grad_clip": 10.0,           # 0 disables
        "log_interval": 50,          # steps between log lines: also the step loop's only host-device
                                     # syncs, and where a pre-emption signal (SIGTERM/SIGUSR1) is acted on
        "num_workers": 0,            # DataLoader workers per process (0: batches read in the training process)
        "prefetch_factor": 4,        # batches each worker reads ahead (with num_workers > 0)
        "amp": "auto",               # auto | bf16 | fp16 | none, on GPU only: auto and bf16 autocast in
                                     # bf16 where the GPU has it, else fp16 with loss scaling; none: fp32
        "dist_timeout": 600,         # seconds a DDP process waits in a collective before it fails: bounds
                                     # the wait for a peer that died; must exceed the main process's
                                     # validation + checkpoint at an epoch's end (the others wait then)
        "pretrained_lr_mult": 1.0,   # lr multiplier of layers loaded with init_from
        "head_only_epochs": 0,       # with init_from: the first N of `epochs` train only the output layer (LP-FT)
        "freeze": "none",            # none | embedding (train only the output layer)
        "patience": 0,               # early stopping on the dev metric; 0: off
        "keep_checkpoints": 3,       # epoch checkpoints kept (the newest); 0 keeps all
        "average_last": 0,           # without a dev choice, final.pt = the mean weights of the last N
                                     # epochs (weight averaging, as WeSpeaker's average_model); 0, 1: the last
        "checkpoint_interval": 2000, # also a checkpoint every N optimizer steps (0: per epoch only)
    },
    "extract": {
        "chunk_frames": 6000,        # longer utterances are embedded in chunks, averaged
        "min_frames": 10,            # fewer voiced frames: use all frames instead
        "batch_frames": 20000,       # frames per batch of equal-length chunks
    },
}

CHOICES = {
    "model.loss": ("asoftmax", "amsoftmax", "aamsoftmax", "softmax"),
    "data.sampling": ("balanced", "proportional"),
    "train.optimizer": ("adam", "adamw", "sgd"),
    "train.lr_schedule": ("exp", "cosine", "constant"),
    "train.amp": ("auto", "bf16", "fp16", "none"),
    "train.freeze": ("none", "embedding"),
}


def config_schema(encoder: type) -> Schema:
    """The schema of a config whose ``model.type`` is ``encoder``'s."""
    defaults = copy.deepcopy({"model": encoder.MODEL_DEFAULTS, **DEFAULTS, "frontend": encoder.FRONTEND_DEFAULTS})
    for section, values in encoder.SECTION_DEFAULTS.items():
        defaults[section].update(values)
    note = f" of model type {encoder.type_name}"
    return Schema(defaults, choices=CHOICES, unknown_note={"model": note, "frontend": note})


def validate_config(cfg: Mapping | None, *, where: str = "") -> dict:
    """Merge ``cfg`` over the defaults of its model type and check every key and type.

    ``where`` (e.g. ``"conf/x.yaml: "``) prefixes error messages. Returns a new
    complete config dict.
    """
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}config must be a mapping with sections {', '.join(SECTIONS)}")
    model = cfg.get("model") or {}
    mtype = model.get("type", "resnet") if isinstance(model, Mapping) else "resnet"
    try:
        enc = encoder_class(mtype)
    except KeyError as e:
        raise ConfigError(f"{where}model.type: {e.args[0]}") from None
    out = config_schema(enc).complete(cfg, where=where)
    enc.check_config(out, where)
    return _check_common(out, where)


def _check_common(out: dict, where: str) -> dict:
    m, d = out["model"], out["data"]
    if m["loss"] == "asoftmax" and (m["margin"] != int(m["margin"]) or m["margin"] < 1):
        raise ConfigError(f"{where}model.margin: A-softmax needs an integer margin >= 1, got {m['margin']}")
    if not 1 <= d["chunk_min"] <= d["chunk_max"]:
        raise ConfigError(f"{where}data.chunk_min/chunk_max: need 1 <= chunk_min <= chunk_max")
    if not 0 <= out["train"]["head_only_epochs"] < out["train"]["epochs"]:
        raise ConfigError(f"{where}train.head_only_epochs: need 0 <= head_only_epochs < epochs")
    if out["train"]["batch_size"] < 1:
        raise ConfigError(f"{where}train.batch_size: must be positive")
    if out["train"]["lr_scale_ref_batch"] < 0:
        raise ConfigError(f"{where}train.lr_scale_ref_batch: must be 0 (off) or a batch size")
    for k, low in (("log_interval", 1), ("num_workers", 0), ("prefetch_factor", 1), ("dist_timeout", 1)):
        if out["train"][k] < low:
            raise ConfigError(f"{where}train.{k}: must be at least {low}, got {out['train'][k]}")
    return out


def load_config(path: str | os.PathLike) -> dict:
    """Read and validate a YAML config file."""
    return validate_config(read_yaml(path), where=f"{path}: ")


def dump_config(cfg: Mapping, path: str | os.PathLike) -> None:
    from ..io import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(cfg), f, sort_keys=False)


def arch_of(cfg: Mapping) -> dict:
    """The model type and the keys of ``cfg['model']`` that fix parameter shapes
    (for checkpoint checks)."""
    mtype = cfg["model"].get("type", "resnet")
    return {"type": mtype, **{k: cfg["model"][k] for k in encoder_class(mtype).ARCH_KEYS}}


def describe(cfg: Mapping) -> str:
    """Short architecture description for error messages."""
    return " ".join(f"{k}={v}" for k, v in arch_of(cfg).items())


def build_encoder(cfg: Mapping, num_classes: int):
    """The network of a (validated or partial) config with ``num_classes`` outputs."""
    cfg = validate_config(cfg)
    cls = encoder_class(cfg["model"]["type"])
    return cls(num_classes=num_classes, **cls.init_args(cfg))
