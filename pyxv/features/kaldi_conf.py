"""Kaldi-syntax config files (``--name=value`` lines, ``#`` comments).

Like Kaldi's ``ParseOptions::ReadConfigFile``: every non-blank line must look
like ``--x=y`` (or ``--flag`` for a true boolean), and an option the program
does not register is an error; our errors (:class:`pyxv.config.ConfigError`)
name the file and line.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

from ..config import ConfigError

_TRUE = {"true", "t", "1", ""}
_FALSE = {"false", "f", "0"}


def to_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"invalid boolean '{value}' (use true or false)")


def parse_kaldi_conf(path: str | os.PathLike, spec: dict[str, Callable[[str], object]],
                     ignore: Iterable[str] = ()) -> dict[str, object]:
    """Read ``path`` against ``spec`` (option name with dashes -> type: float,
    int, bool, str) -> {python_name: value} for the options set in the file.

    Options in ``ignore`` are accepted and dropped (Kaldi options that do not
    change the result). Raises ``ConfigError`` naming file:line for a
    malformed line, an unknown option or a bad value. Later lines win, as in Kaldi.
    """
    out: dict[str, object] = {}
    ignore = set(ignore)
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    with f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{path}:{lineno}"
            if not line.startswith("--"):
                raise ConfigError(f"{where}: '{line}' does not look like a line from a Kaldi "
                                     "config file: should be of the form --x=y")
            body = line[2:]
            name, has_eq, value = body.partition("=")
            name = name.strip().replace("_", "-")
            value = value.strip()
            if name in ignore:
                continue
            if name not in spec:
                raise ConfigError(f"{where}: invalid option --{name} "
                                     f"(known: {', '.join('--' + k for k in sorted(spec))})")
            typ = spec[name]
            try:
                if typ is bool:
                    val = to_bool(value if has_eq else "true")
                else:
                    if not has_eq:
                        raise ValueError("needs a value (--x=y)")
                    val = typ(value)
            except ValueError as e:
                raise ConfigError(f"{where}: bad value for --{name}: {e}") from e
            out[name.replace("-", "_")] = val
    return out
