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
A run that does not resume (another config or data, or ``--start-over``) moves
the old training state into ``stale_<YYYYmmdd-HHMMSS>/`` (:func:`move_aside`);
nothing is deleted.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..config import ConfigError
from ..io import atomic_open
from ..io import file_digest as io_file_digest
from ..nnet.config import arch_of, build_encoder, describe, validate_config
from ..nnet.encoder import state_mismatch, without_head

FORMAT = "pyxv-xvector-1"


class CheckpointError(RuntimeError):
    pass


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint that needs the unpickler able to run code, and no trust given (not damage: a resume
    stops here rather than fall back to an older checkpoint)."""


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists, so the file loads with ``weights_only=True``;
    containers without numpy values come back as they are (the same objects)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        new = {k: _plain(v) for k, v in obj.items()}
        if all(new[k] is v for k, v in obj.items()):
            return obj
        return OrderedDict(new) if isinstance(obj, OrderedDict) else new
    if type(obj) in (list, tuple):
        new = [_plain(v) for v in obj]
        if all(a is b for a, b in zip(new, obj)):
            return obj
        return type(obj)(new)
    return obj


def save(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` whole or not at all: serialised in memory, then written to a
    temporary file that is fsync'ed and renamed. A write error (disk full ...)
    raises :class:`pyxv.io.OutputError` naming ``path`` and the free space, and
    leaves no temporary file.

    Only tensors and plain values are written (numpy values become Python ones) and
    the bytes are checked to load with ``torch.load(weights_only=True)``: a
    checkpoint never needs the unpickler that can run code."""
    buf = io.BytesIO()
    torch.save(_plain(obj), buf)
    buf.seek(0)
    try:
        torch.load(buf, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: not written: it would hold objects that only an unpickler able to run "
                              f"code can load ({_refused_what(e)})") from e
    with atomic_open(path, "wb") as f:
        f.write(buf.getbuffer())


def _weights_only_refusal(e: BaseException) -> bool:
    return isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e).replace(" ", "_").lower()


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else repr(e)


def _refused_what(e: BaseException) -> str:
    """The line of torch's weights-only refusal that names what it refused (e.g. a GLOBAL)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return next((ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln), lines[0] if lines else repr(e))


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu", trust: bool | None = None) -> dict:
    """A checkpoint or model file, read with ``torch.load(weights_only=True)``: tensors and
    plain values only, nothing in it can run code. A file that needs the full unpickler
    (written by an older pyxv with numpy values, or crafted) is refused in one line
    unless trusted (``trust=True``, ``--trust``, ``PYXV_TRUST_PICKLE=1``: see
    :mod:`pyxv.params`); trusted, it loads with a warning."""
    from ..params import trusted, untrusted_message, warn_trusted

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        if not _weights_only_refusal(e):
            raise CheckpointError(f"{path}: cannot read checkpoint: {_first_line(e)}") from e
        if not trusted(trust):
            raise UntrustedCheckpointError(untrusted_message(path, f"a checkpoint that needs torch.load(weights_only=False) "
                                                          f"({_refused_what(e)})")) from None
        warn_trusted(path, "a checkpoint")
        try:
            ck = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e2:
            raise CheckpointError(f"{path}: cannot read checkpoint: {_first_line(e2)}") from e2
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
    missing, unexpected or mis-shaped keys (``skip_head``: all but ``head.*``,
    :func:`pyxv.nnet.encoder.state_mismatch`)."""
    if skip_head:
        state = without_head(state)
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


# ------------------------------------------------------------------ fingerprint
_CODE: str | None = None


def code_revision() -> str:
    """SHA-1 of pyxv's Python sources: changes with any edit, committed or not.
    Only logged on resume (a code edit does not stop a run from going on)."""
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
    """SHA-1 of a file, as the resume fingerprints have always recorded it."""
    return io_file_digest(path, "sha1")


def fingerprint(cfg: dict, data: Mapping[str, Iterable], *, processes: int = 1, extra: dict | None = None,
                init_from: str | os.PathLike | None = None, features: str | None = None) -> dict:
    """What a checkpoint may be resumed under: the config (``train.batch_size``
    per process), the number of processes (with it the global batch), the
    training data (``data``: named lists of lines that describe it, e.g.
    ``{"training list": ["utt label frames location", ...]}``, each hashed on its
    own so a refusal can name the list that changed), the ``extra`` stored with
    the model and the initial model's bytes. ``code`` (:func:`code_revision`) and
    ``features`` (the feature scp, for messages) are recorded but do not block."""
    lists = {name: list(lines) for name, lines in data.items()}
    per = int(cfg["train"]["batch_size"])
    return {"config": json.loads(json.dumps(cfg, default=str)),
            "batch": {"processes": processes, "per_process": per, "global": per * processes},
            "data": {name: {"sha1": _sha1(lines), "lines": len(lines)} for name, lines in lists.items()},
            "features": features,
            "extra": _sha1([json.dumps(extra or {}, sort_keys=True, default=str)]),
            "init_from": file_digest(init_from) if init_from else None,
            "code": code_revision()}


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Every key path whose value differs, as ``"train.lr 0.01 -> 0.02"``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
        return out
    return [] if a == b else [f"{where} {a!r} -> {b!r}"]


def _without_batch(cfg: dict | None) -> dict:
    """The config less ``train.batch_size`` (compared through the global batch)."""
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in (cfg or {}).items()}
    if isinstance(cfg.get("train"), dict):
        cfg["train"].pop("batch_size", None)
    return cfg


def _fingerprinted(old: dict | None, new: dict) -> dict:
    """``old`` less the keys of sections ``new`` has that ``new`` leaves out: a
    setting the trainer no longer fingerprints (it does not change the weights,
    e.g. ``train.amp``) or no longer has does not stop the resume of a checkpoint
    written before."""
    out = {}
    for k, v in (old or {}).items():
        if isinstance(v, dict) and isinstance(new.get(k), dict):
            v = {kk: vv for kk, vv in v.items() if kk in new[k]}
        out[k] = v
    return out


@dataclass
class ResumeCheck:
    """How a checkpoint's fingerprint compares with this run's (:func:`compare_fingerprints`)."""
    changed: list[str] = field(default_factory=list)  # what the numbers depend on: cannot resume
    launch: str | None = None  # the same run launched on another number of processes: cannot go on as is
    notes: list[str] = field(default_factory=list)    # differences that do not stop a resume


def compare_fingerprints(old: dict | None, new: dict) -> ResumeCheck:
    """Whether a checkpoint with fingerprint ``old`` may be resumed under ``new``.

    - ``changed``: the config (each key that differs), a data list, the data stored
      with the model or the initial model changed; or ``train.batch_size`` changed
      so that the global batch did.
    - ``launch``: only the number of processes changed and with it the global
      batch (``world x train.batch_size``): batches, steps per epoch and lr
      schedule follow it, so the run can go on only at its old global batch.
    - ``notes``: the code revision, or the split of an unchanged global batch over
      processes, differ; the run resumes (on other processes batch-norm statistics
      are per process, so it is not bit-identical to an uninterrupted run).
    """
    r = ResumeCheck()
    if not old or "batch" not in old:
        r.changed.append("it was written by an older pyxv (train.batch_size was then the global batch), "
                         "whose checkpoints this version cannot check")
        return r
    keys = _differences(_without_batch(_fingerprinted(old.get("config"), new["config"])),
                        _without_batch(new["config"]))
    if keys:
        r.changed.append("the config changed: " + ", ".join(keys))
    lists = []
    for name in sorted(set(old.get("data") or {}) | set(new["data"])):
        a, b = (old.get("data") or {}).get(name), new["data"].get(name)
        if a != b:
            n = f"{a['lines']} -> {b['lines']} entries" if a and b and a["lines"] != b["lines"] else "other entries"
            lists.append(f"{name} {n}")
    if lists:
        where = f" (features: {new['features']})" if new.get("features") else ""
        r.changed.append(f"the training data changed: {', '.join(lists)}{where}")
    if old.get("init_from") != new["init_from"]:
        r.changed.append("the initial model changed (another file or other bytes)")
    if old.get("extra") != new["extra"]:
        r.changed.append("the data stored with the model changed (feature configs, normalisation)")
    ob, nb = old["batch"], new["batch"]
    if ob["global"] != nb["global"]:
        if ob["per_process"] != nb["per_process"]:
            r.changed.append(f"the global batch changed: train.batch_size {ob['per_process']} -> "
                             f"{nb['per_process']} per process x {ob['processes']} -> {nb['processes']} "
                             f"process(es) = {ob['global']} -> {nb['global']}")
        elif r.changed:
            r.changed.append(f"the number of processes changed: {ob['processes']} -> {nb['processes']} "
                             f"(global batch {ob['global']} -> {nb['global']})")
        else:
            keep = (f", set train.batch_size {ob['global'] // nb['processes']} to keep the global batch "
                    f"{ob['global']}" if ob["global"] % nb["processes"] == 0 else "")
            r.launch = (f"it was written by {ob['processes']} process(es) of train.batch_size {ob['per_process']} "
                        f"(global batch {ob['global']}) and this run has {nb['processes']} (global batch "
                        f"{nb['global']}); batches, steps per epoch and the lr schedule follow the global batch, "
                        f"so it goes on only at {ob['global']}: run it again on {ob['processes']} process(es)"
                        f"{keep}, or start over on purpose with --start-over (steps/train_xvector.sh --resume "
                        f"false), which moves the old training state aside")
    elif ob["processes"] != nb["processes"]:
        r.notes.append(f"the global batch {nb['global']} is now {nb['processes']} process(es) x "
                       f"{nb['per_process']} (was {ob['processes']} x {ob['per_process']}): same batches and "
                       f"position; batch-norm statistics are per process, so the weights will not be "
                       f"bit-identical to an uninterrupted run's")
    if old.get("code") != new["code"]:
        r.notes.append(f"the code revision changed ({str(old.get('code'))[:12]} -> {new['code'][:12]}: pyxv "
                       f"sources differ from the run that wrote it)")
    return r


# Training state a run that does not resume moves aside (paths in out_dir).
STATE_PATHS = ("checkpoints", "best.pt", "final.pt", "config.yaml", "log/history.json")


def move_aside(out_dir: str | os.PathLike) -> tuple[Path | None, list[str]]:
    """Move the training state of ``out_dir`` (:data:`STATE_PATHS`) into a new
    ``out_dir/stale_<YYYYmmdd-HHMMSS>/`` under the same relative paths, so that
    nothing a user trained is deleted by starting over. Returns that folder and
    what was moved (``None, []`` when there was nothing)."""
    out_dir = Path(out_dir)
    present = [p for p in STATE_PATHS if (out_dir / p).exists()]
    if not present:
        return None, []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):  # two start-overs within a second get stale_<time>-1 ...
        dest = out_dir / (f"stale_{stamp}" + (f"-{n}" if n else ""))
        try:
            dest.mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover
        raise CheckpointError(f"{out_dir}: cannot make a stale_{stamp} folder to move the old training state to")
    for p in present:
        (dest / p).parent.mkdir(parents=True, exist_ok=True)
        os.replace(out_dir / p, dest / p)  # a rename inside out_dir: no copy, nothing lost on a crash
    return dest, present


def model_file(net: torch.nn.Module, cfg: dict, labels: list, extra: dict | None = None, **more: Any) -> dict:
    return {"format": FORMAT, "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "config": cfg, "labels": list(labels), "arch": arch_of(cfg), "extra": dict(extra or {}), **more}
