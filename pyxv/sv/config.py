"""conf/sv.yaml: the verification back-end's settings, checked by the project's one schema (``pyxv.config``).

The back-end's sections (cosine, plda, nap, asnorm, calibration, threshold) and
``seed`` take their defaults from the back-end itself
(``pyxv.backend.pipeline.DEFAULT_CONFIG``); the scorer's keys (``block_size``,
``max_exact_trials``, ``hist_bins``) from ``pyxv.sv.scoring``. A file lists only
what it changes; an unknown key or section, or a value of the wrong type, is a
``ConfigError`` naming the file and the dotted key.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from ..backend.pipeline import DEFAULT_CONFIG
from ..config import ConfigError, Schema, read_yaml
from .scoring import BLOCK_SIZE, HIST_BINS, MAX_EXACT_TRIALS

__all__ = ["SV_SCHEMA", "load_sv_config", "validate_sv_config"]


class _SVSchema(Schema):
    """nap.dim is 'auto' or a number of dimensions: two types, which a default alone cannot say."""

    def check(self, path: str, value: Any, *, where: str = "", key: str | None = None) -> Any:
        if path == "nap.dim" and value != "auto" and not (isinstance(value, int) and not isinstance(value, bool)
                                                          and value >= 0):
            raise ConfigError(f"{where}{key or path}: expected 'auto' or a number of dimensions, got {value!r}")
        if path == "nap.dim":
            return value
        return super().check(path, value, where=where, key=key)


SV_SCHEMA = _SVSchema(
    {**DEFAULT_CONFIG, "block_size": BLOCK_SIZE, "max_exact_trials": MAX_EXACT_TRIALS, "hist_bins": HIST_BINS},
    choices={"nap.dim_criterion": ("cross", "all", "mean")})


def validate_sv_config(cfg: Mapping | None, *, where: str = "") -> dict:
    """The complete settings: ``cfg`` merged over the defaults, every key checked (``where`` prefixes errors)."""
    if cfg is not None and not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}expected a mapping of sections and keys ({', '.join(SV_SCHEMA.defaults)}), "
                          f"got {cfg!r}")
    return SV_SCHEMA.complete(cfg, where=where)


def load_sv_config(path: str | os.PathLike | None) -> dict:
    """The complete settings of the YAML file ``path`` (None: the defaults)."""
    if path is None:
        return validate_sv_config(None)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config {path} does not exist")
    return validate_sv_config(read_yaml(path), where=f"{path}: ")
