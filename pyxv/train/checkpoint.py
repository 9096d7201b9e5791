"""Checkpoints: training state for resuming and the final model file.

A model file (``final.pt``, ``checkpoints/*.pt``) is a dict with ``format``,
``model`` (state dict), ``config`` (the validated config), ``labels`` (class
names in output order: the speaker list), ``arch`` and ``extra`` (e.g. the
MFCC/VAD config texts). Training checkpoints also hold ``optimizer``,
``scheduler``, ``epoch``, ``step`` (optimizer steps done in that epoch),
``history``, the early-stopping state, the RNG state and the
:func:`fingerprint` of the run that wrote them:

- ``checkpoints/epoch_E.pt``: after epoch E;
- ``checkpoints/epoch_E_step_S.pt``: in epoch E after S of its optimizer steps
  (every ``train.checkpoint_interval`` steps).

Every file is written whole or not at all (temporary file, fsync, rename).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import torch

from ..io import atomic_open
from ..nnet.config import ConfigError, arch_of, describe, validate_config
from ..nnet.registry import build_encoder

FORMAT = "pyxv-xvector-1"


class CheckpointError(RuntimeError):
    pass


def save(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` whole or not at all: serialised in memory, then written to a
    temporary file that is fsync'ed and renamed. A write error (disk full ...)
    raises :class:`pyxv.io.OutputError` naming ``path`` and the free space, and
    leaves no temporary file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_open(path, "wb") as f:
        f.write(buf.getbuffer())


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


def state_mismatch(own: dict, state: dict, *, skip_head: bool = False, limit: int | None = 5) -> str:
    """What keeps ``state`` from loading into a model whose state dict is ``own``:
    ``"missing keys [...]; unexpected keys [...]; wrong shapes [...]"`` (each list
    cut to ``limit``), or ``""`` when it fits. ``skip_head``: ``head.*`` may be absent."""
    cut = (lambda xs: xs[:limit]) if limit else (lambda xs: xs)
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and tuple(getattr(v, "shape", ())) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and not (skip_head and k.startswith("head."))]
    unexpected = [k for k in state if k not in own]
    parts = [f"missing keys {cut(missing)}" if missing else "", f"unexpected keys {cut(unexpected)}" if unexpected
             else "", f"wrong shapes {cut(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def load_weights(net: torch.nn.Module, state: dict, path: str | os.PathLike, *, skip_head: bool = False) -> None:
    """``net.load_state_dict(state)`` with an error naming the file and the
    missing, unexpected or mis-shaped keys (``skip_head``: all but ``head.*``)."""
    if skip_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    problem = state_mismatch(net.state_dict(), state, skip_head=skip_head)
    if problem:
        raise CheckpointError(f"{path}: weights do not fit the {type(net).__name__} model: {problem}")
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


_NAME = re.compile(r"epoch_(\d+)(?:_step_(\d+))?\.pt")


def checkpoint_name(epoch: int, step: int | None = None) -> str:
    """``epoch_E.pt`` after a whole epoch, ``epoch_E_step_S.pt`` within it."""
    return f"epoch_{epoch}.pt" if step is None else f"epoch_{epoch}_step_{step}.pt"


def position(path: str | os.PathLike) -> tuple[int, float] | None:
    """(epoch, steps done in it; inf for a whole epoch) from a checkpoint's name."""
    m = _NAME.fullmatch(Path(path).name)
    if not m:
        return None
    return int(m.group(1)), (float(m.group(2)) if m.group(2) else float("inf"))


def training_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """The training checkpoints in ``out_dir/checkpoints``, newest first."""
    d = Path(out_dir) / "checkpoints"
    found = [p for p in d.glob("epoch_*.pt") if position(p) is not None] if d.is_dir() else []
    return sorted(found, key=position, reverse=True)


def last_epoch_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest whole-epoch checkpoint."""
    return next((p for p in training_checkpoints(out_dir) if position(p)[1] == float("inf")), None)


# ------------------------------------------------------------------ fingerprint
_CODE: str | None = None


def code_revision() -> str:
    """SHA-1 of pyxv's Python sources: changes with any edit, committed or not."""
    global _CODE
    if _CODE is None:
        h = hashlib.sha1()
        root = Path(__file__).resolve().parents[1]
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
        _CODE = h.hexdigest()
    return _CODE


def _sha1(parts: Iterable) -> str:
    h = hashlib.sha1()
    for x in parts:
        h.update(str(x).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(cfg: dict, data: Iterable, *, extra: dict | None = None,
                init_from: str | os.PathLike | None = None) -> dict:
    """What a checkpoint may be resumed under: the config, the training data
    (``data``: any lines that describe it, e.g. utterance, label, frames, feature
    location), the ``extra`` stored with the model, the initial model's bytes and
    the code revision (:func:`code_revision`)."""
    return {"config": json.loads(json.dumps(cfg, default=str)),
            "data": _sha1(data),
            "extra": _sha1([json.dumps(extra or {}, sort_keys=True, default=str)]),
            "init_from": file_digest(init_from) if init_from else None,
            "code": code_revision()}


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return None
    return None if a == b else f"{where} {a!r} -> {b!r}"


def fingerprint_difference(old: dict | None, new: dict) -> str | None:
    """None when a checkpoint with fingerprint ``old`` may be resumed under ``new``,
    else the reason in words."""
    if not old:
        return "it has no fingerprint (written by an older pyxv)"
    if old.get("config") != new["config"]:
        return f"the config changed ({_first_difference(old.get('config'), new['config'])})"
    if old.get("data") != new["data"]:
        return "the training data changed (utterances, labels, lengths or feature files)"
    if old.get("init_from") != new["init_from"]:
        return "the initial model changed"
    if old.get("extra") != new["extra"]:
        return "the data stored with the model changed (feature configs, normalisation)"
    if old.get("code") != new["code"]:
        return "the code changed (pyxv sources differ from the run that wrote it)"
    return None


def model_file(net: torch.nn.Module, cfg: dict, labels: list, extra: dict | None = None, **more: Any) -> dict:
    return {"format": FORMAT, "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "config": cfg, "labels": list(labels), "arch": arch_of(cfg), "extra": dict(extra or {}), **more}
