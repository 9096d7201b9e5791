"""conf/sv.yaml: the verification back-end's settings, checked by the project's one schema (``pyxv.config``).

The back-end's sections (cosine, plda, nap, asnorm, calibration, threshold) and
``seed`` take their defaults from the back-end itself
(``pyxv.backend.pipeline.DEFAULT_CONFIG``) and its schema (``BackendSchema``, which
``Backend.from_config`` checks with too); the scorer's keys (``block_size``,
``max_exact_trials``, ``hist_bins``) from ``pyxv.sv.scoring``. A file lists only
what it changes; an unknown key or section, or a value of the wrong type, is a
``ConfigError`` naming the file and the dotted key.
"""
from __future__ import annotations

import os
from typing import Mapping

from ..backend.pipeline import BACKEND_CHOICES, DEFAULT_CONFIG, BackendSchema
from ..config import ConfigError, read_yaml
from .scoring import BLOCK_SIZE, HIST_BINS, MAX_EXACT_TRIALS

__all__ = ["SV_SCHEMA", "load_sv_config", "validate_sv_config"]

SV_SCHEMA = BackendSchema(
    {**DEFAULT_CONFIG, "block_size": BLOCK_SIZE, "max_exact_trials": MAX_EXACT_TRIALS, "hist_bins": HIST_BINS},
    choices=BACKEND_CHOICES)


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
