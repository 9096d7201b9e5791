"""Config files: defaults, checked overrides and the one error class.

Every YAML config of the project (the x-vector network's, the emotion systems',
the verification back-end's) is a nested mapping of defaults; a file lists only
what it changes. :class:`Schema` merges such a partial mapping over the defaults
and checks each value against its default:

* ``bool``, ``int``, ``float`` (an int is taken and made a float), ``str``, and
  lists of ints, numbers or strings take values of that type;
* ``choices`` (dotted path -> allowed values) narrow a key further;
* a ``None`` default means "unset"; ``nullable`` (dotted path -> an example
  value) gives the type a set value must have (without one, any value goes);
* a mapping default is a section with fixed keys, unless its path is in
  ``free``: then any names map to values (each checked against the example
  given there, if any).

A bad value is a :class:`ConfigError` naming the key as a dotted path, with the
file as prefix (``conf/x.yaml: train.lr: expected float, got 'fast'``); an
unknown key or section lists the known ones.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


def read_yaml(path: str | os.PathLike) -> Any:
    """The parsed YAML file ``path`` (None for an empty file); ConfigError when it
    is missing or not YAML."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_value(key: str, value: Any, default: Any, *, where: str = "",
                choices: tuple | list | None = None) -> Any:
    """``value`` for ``key`` typed like ``default`` (an int made a float where the
    default is a float), else ConfigError naming ``where`` + ``key``."""
    bad = ConfigError(f"{where}{key}: expected {type(default).__name__}, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
    elif isinstance(default, int):
        if not _is_int(value):
            raise bad
    elif isinstance(default, float):
        if not _is_number(value):
            raise bad
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad
    elif isinstance(default, list):
        if default and all(_is_int(x) for x in default):
            what, ok = "integers", _is_int
        elif default and all(_is_number(x) for x in default):
            what, ok = "numbers", _is_number
        elif default and all(isinstance(x, str) for x in default):
            what, ok = "strings", lambda x: isinstance(x, str)
        else:
            what, ok = "values", lambda x: True
        if not isinstance(value, list) or not all(ok(x) for x in value):
            raise ConfigError(f"{where}{key}: expected a list of {what}, got {value!r}")
        value = list(value)
    elif isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}{key}: expected a mapping, got {value!r}")
        value = dict(value)
    elif default is not None:  # pragma: no cover - a default of a type the checker does not know
        raise bad
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}{key}: '{value}' is not one of {', '.join(map(str, choices))}")
    return value


class Schema:
    """Defaults and what a value may be (see the module docstring).

    ``unknown_note`` (section path -> text) is added to the unknown-key message of
    that section (``" of model type resnet"``).
    """

    def __init__(self, defaults: Mapping[str, Any], *, choices: Mapping[str, tuple] | None = None,
                 nullable: Mapping[str, Any] | None = None, free: Mapping[str, Any] | None = None,
                 unknown_note: Mapping[str, str] | None = None):
        self.defaults = copy.deepcopy(dict(defaults))
        self.choices = dict(choices or {})
        self.nullable = dict(nullable or {})
        self.free = dict(free or {})
        self.unknown_note = dict(unknown_note or {})

    def complete(self, over: Mapping | None = None, *, where: str = "") -> dict:
        """A new complete config: the defaults with ``over`` merged in."""
        out = copy.deepcopy(self.defaults)
        if over:
            self.merge(out, over, where=where)
        return out

    def section(self, path: str) -> Any:
        """The defaults at a dotted path."""
        node: Any = self.defaults
        for part in path.split(".") if path else ():
            node = node[part]
        return node

    def check(self, path: str, value: Any, *, where: str = "", key: str | None = None) -> Any:
        """``value`` checked for the leaf at ``path`` (the message names ``key``, by default ``path``)."""
        key = key or path
        default = self.section(path)
        if value is None and default is None:
            return None
        if default is None:
            if path not in self.nullable:
                return value
            default = self.nullable[path]
        return check_value(key, value, default, where=where, choices=self.choices.get(path))

    def merge(self, base: dict, over: Mapping, *, where: str = "", path: str = "", shown: str | None = None) -> None:
        """Merge ``over`` into ``base`` (the complete section at ``path``), checking each
        key; ``shown`` is the dotted prefix the messages use (by default ``path``)."""
        shown = path if shown is None else shown
        defaults = self.section(path)
        top_sections = not path and all(isinstance(v, Mapping) for v in defaults.values())
        for k, v in over.items():
            here = f"{path}.{k}" if path else str(k)
            key = f"{shown}.{k}" if shown else str(k)
            if k not in defaults:
                what = "section" if top_sections else "key"
                raise ConfigError(f"{where}{key}: unknown {what}{self.unknown_note.get(path, '')} "
                                  f"(known: {', '.join(map(str, defaults))})")
            d = defaults[k]
            if isinstance(d, Mapping) and here in self.free:
                if v is None:
                    continue
                if not isinstance(v, Mapping):
                    raise ConfigError(f"{where}{key}: expected a mapping, got {v!r}")
                example = self.free[here]
                for name, value in v.items():
                    base[k][name] = value if example is None else check_value(
                        f"{key}.{name}", value, example, where=where)
            elif isinstance(d, Mapping):
                if v is None:       # an empty section in YAML: nothing changed
                    continue
                if not isinstance(v, Mapping):
                    raise ConfigError(f"{where}{key}: expected a mapping of options, got {v!r}")
                self.merge(base[k], v, where=where, path=here, shown=key)
            else:
                base[k] = self.check(here, v, where=where, key=key)

    def partial(self, path: str, over: Mapping, *, where: str = "", shown: str | None = None) -> dict:
        """The keys of ``over`` checked as an override of the section at ``path``
        (only those keys, the values converted)."""
        probe = copy.deepcopy(self.section(path))
        self.merge(probe, over, where=where, path=path, shown=shown)
        return {k: probe[k] for k in over}
