"""Model parameters on disk without pickle: arrays in an ``.npz``, everything else in a JSON beside it.

A fitted object (an SV back-end, an emotion logistic regression) is written as two
files with one stem, e.g. ``backend.json`` + ``backend.npz``:

- the JSON holds ``format``, ``version``, the object's ``type`` name, the versions of
  pyxv, numpy (and scikit-learn where it matters) that wrote it, the sha256 of the
  npz, and ``params``: the object's configuration and fitted scalars as a tree of
  plain values in which every array is a reference ``{"array": "<name>"}``;
- the npz holds those arrays, read back with ``allow_pickle=False``.

So reading a model file only parses JSON and numeric arrays: nothing in it can run
code, and a type name (not a Python class path) picks the reader through an explicit
table, so renaming a class does not orphan old files (the way Kaldi and hyperion
store parameters). Each object's ``to_params``/``from_params`` sits beside it.

Files in the old pickled form (``model.pkl``, ``backend.pkl``, checkpoints that need
``torch.load(weights_only=False)``) can run code when read; they are refused unless
trust is given: ``--trust`` on the ``pyxv`` commands, ``PYXV_TRUST_PICKLE=1`` in the
environment (the recipe's steps), or ``trust=True`` in Python. With trust they load
with a warning.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("pyxv.params")

__all__ = ["ParamsError", "UntrustedFileError", "TRUST_ENV", "set_trust", "trusted", "untrusted_message",
           "load_trusted_pickle", "write_params", "read_params", "params_paths"]

FORMAT = "pyxv-params"
VERSION = 1
TRUST_ENV = "PYXV_TRUST_PICKLE"
_TRUST = False   # set by the pyxv command's --trust (set_trust)


class ParamsError(ValueError):
    """A parameter file that cannot be used; the message names the file and what is wrong."""


class UntrustedFileError(ParamsError):
    """A file in a pickled form (it could run code when read) and no trust given."""


def set_trust(on: bool = True) -> None:
    """Allow (or stop allowing) pickled model files in this process (the ``--trust`` option)."""
    global _TRUST
    _TRUST = bool(on)


def trusted(trust: bool | None = None) -> bool:
    """``trust`` when given, else ``--trust`` of this process or ``PYXV_TRUST_PICKLE=1``."""
    if trust is not None:
        return bool(trust)
    return _TRUST or os.environ.get(TRUST_ENV, "") == "1"


def untrusted_message(path, what: str) -> str:
    return (f"{path}: {what} in the old pickled form, which can run code when loaded; refused. If you trust where "
            f"it came from, allow it with --trust (pyxv commands) or {TRUST_ENV}=1 (recipe steps, Python)")


def warn_trusted(path, what: str) -> None:
    log.warning("%s: loading %s in the old pickled form (trusted: it could run code); rewrite it with this pyxv "
                "to store parameters only", path, what)


def load_trusted_pickle(path, what: str, trust: bool | None = None):
    """Unpickle ``path`` only with trust (else UntrustedFileError naming it); warns."""
    if not trusted(trust):
        raise UntrustedFileError(untrusted_message(path, what))
    warn_trusted(path, what)
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:
        raise ParamsError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------- npz + JSON
def params_paths(path) -> tuple[Path, Path]:
    """(JSON, npz) of a parameter file given either of them or their common stem."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".npz")


def _split(obj: Any, where: str, arrays: dict) -> Any:
    """The tree with each array moved into ``arrays`` under its path and replaced by a reference."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufcU":
            raise TypeError(f"parameter '{where}': arrays of dtype {obj.dtype} cannot be stored without pickle")
        arrays[where] = obj
        return {"array": where}
    if isinstance(obj, dict):
        if "array" in obj:
            raise TypeError(f"parameter '{where}': the key 'array' is reserved for array references")
        return {str(k): _split(v, f"{where}.{k}" if where else str(k), arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{where}.{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise TypeError(f"parameter '{where}': a {type(obj).__name__} is not a plain value or array")


def _join(obj: Any, arrays, where: Path) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"array"}:
            name = obj["array"]
            if name not in arrays:
                raise ParamsError(f"{where}: array '{name}' is missing")
            return arrays[name]
        return {k: _join(v, arrays, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays, where) for v in obj]
    return obj


def write_params(path, type_name: str, params: dict, versions: dict | None = None) -> Path:
    """Write ``params`` (a tree of plain values and numeric arrays) as ``<stem>.json`` + ``<stem>.npz``,
    each whole or not at all (npz first; the JSON records its sha256, so a pair from two saves is
    detected). Returns the JSON path."""
    from . import __version__
    from .io import atomic_open

    jpath, npath = params_paths(path)
    arrays: dict = {}
    tree = _split(params, "", arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    head = {"format": FORMAT, "version": VERSION, "type": type_name,
            "written_by": {"pyxv": __version__, "numpy": np.__version__, **(versions or {})},
            "arrays": npath.name, "arrays_sha256": hashlib.sha256(data).hexdigest(), "params": tree}
    text = json.dumps(head, indent=1)
    with atomic_open(npath, "wb") as f:
        f.write(data)
    with atomic_open(jpath, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return jpath


def read_params(path, types: dict | None = None) -> tuple[str, dict, dict]:
    """(type, params tree with arrays filled in, the JSON's ``written_by``) of a parameter file.
    ``types``: the accepted type names (an error lists them). Any problem is one ParamsError
    naming the file."""
    jpath, npath = params_paths(path)
    from .io import read_format_json

    head = read_format_json(jpath, FORMAT, VERSION, "pyxv parameter", ParamsError)
    kind = head.get("type")
    if types is not None and kind not in types:
        raise ParamsError(f"{jpath}: holds a '{kind}', not one of {', '.join(sorted(types))}")
    if not isinstance(head.get("params"), dict):
        raise ParamsError(f"{jpath}: no \"params\" object")
    if not npath.is_file():
        raise ParamsError(f"{npath}: missing (the arrays of {jpath.name})")
    data = npath.read_bytes()
    if hashlib.sha256(data).hexdigest() != head.get("arrays_sha256"):
        raise ParamsError(f"{npath}: does not match {jpath.name} (sha256 differs: damaged, or from another save)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ParamsError(f"{npath}: cannot read its arrays ({type(e).__name__}: {e})") from None
    return kind, _join(head["params"], arrays, npath), dict(head.get("written_by") or {})


class StoredState:
    """Objects whose whole state (``vars``) is plain values and numeric arrays: ``to_params`` is that state
    under the class's ``TYPE`` name, ``from_params`` sets it on a new instance (no constructor call, so the
    fitted object comes back exactly as it was)."""

    TYPE = ""

    def to_params(self) -> dict:
        return {"type": self.TYPE, **vars(self)}

    @classmethod
    def from_params(cls, p: dict):
        if p.get("type") != cls.TYPE:
            raise ParamsError(f"a '{p.get('type')}' where a '{cls.TYPE}' was expected")
        obj = cls.__new__(cls)
        vars(obj).update({k: v for k, v in p.items() if k != "type"})
        return obj


def from_table(p: dict, table: dict, what: str):
    """The object of ``p["type"]`` through ``table`` (type name -> class with ``from_params``)."""
    kind = p.get("type") if isinstance(p, dict) else None
    if kind not in table:
        raise ParamsError(f"unknown {what} type '{kind}' (this pyxv reads {', '.join(sorted(table))})")
    return table[kind].from_params(p)
