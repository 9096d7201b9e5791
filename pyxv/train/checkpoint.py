"""Checkpoints: per-epoch training state and the final model file.

A model file (``final.pt``, ``checkpoints/epoch_N.pt``) is a dict with
``format``, ``model`` (state dict), ``config`` (the validated config),
``labels`` (class names in output order: the speaker list), ``arch`` and
``extra`` (e.g. the MFCC/VAD config texts). Epoch checkpoints also hold
``optimizer``, ``scheduler``, ``epoch``, ``step``, ``history`` and the
early-stopping state.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..nnet.config import ConfigError, arch_of, describe, validate_config
from ..nnet.registry import build_encoder

FORMAT = "pyxv-xvector-1"


class CheckpointError(RuntimeError):
    pass


def save(obj: dict, path: str | os.PathLike) -> None:
    """Atomic ``torch.save``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e}") from e
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pyxv x-vector checkpoint")
    return ck


def check_arch(ck: dict, cfg: dict, path: str | os.PathLike) -> None:
    """Raise naming both architectures (and types) when checkpoint and config differ."""
    a, b = arch_of(ck["config"]), arch_of(cfg)
    if a["type"] != b["type"]:
        raise CheckpointError(f"{path}: a checkpoint of encoder type '{a['type']}' cannot be loaded as type "
                              f"'{b['type']}' ({describe(ck['config'])} vs {describe(cfg)})")
    if a != b:
        raise CheckpointError(f"{path}: checkpoint architecture ({describe(ck['config'])}) differs from "
                              f"the config's ({describe(cfg)})")


def load_weights(net: torch.nn.Module, state: dict, path: str | os.PathLike, *, skip_head: bool = False) -> None:
    """``net.load_state_dict(state)`` with an error naming the file and the
    missing, unexpected or mis-shaped keys (``skip_head``: all but ``head.*``)."""
    if skip_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    own = net.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and not (skip_head and k.startswith("head."))]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or shapes:
        parts = [f"missing keys {missing[:5]}" if missing else "", f"unexpected keys {unexpected[:5]}" if unexpected
                 else "", f"wrong shapes {shapes[:3]}" if shapes else ""]
        raise CheckpointError(f"{path}: weights do not fit the {type(net).__name__} model: "
                              + "; ".join(p for p in parts if p))
    net.load_state_dict(state, strict=not skip_head)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The network of a model file (any registered encoder type), in eval mode,
    and the checkpoint dict."""
    ck = load(path)
    try:
        cfg = validate_config(ck.get("config"))
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config is not usable: {e}") from e
    net = build_encoder(cfg, len(ck.get("labels") or []))
    if not isinstance(ck.get("model"), dict):
        raise CheckpointError(f"{path}: has no model weights")
    load_weights(net, ck["model"], path)
    return net.to(device).eval(), ck


def last_epoch_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    best, best_n = None, -1
    d = Path(out_dir) / "checkpoints"
    if d.is_dir():
        for p in d.glob("epoch_*.pt"):
            m = re.fullmatch(r"epoch_(\d+)\.pt", p.name)
            if m and int(m.group(1)) > best_n:
                best, best_n = p, int(m.group(1))
    return best


def model_file(net: torch.nn.Module, cfg: dict, labels: list, extra: dict | None = None, **more: Any) -> dict:
    return {"format": FORMAT, "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "config": cfg, "labels": list(labels), "arch": arch_of(cfg), "extra": dict(extra or {}), **more}
