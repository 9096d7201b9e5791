"""Speaker encoders by type name: the ``model.type`` of an x-vector config.

Every type is a subclass of :class:`pyxv.nnet.encoder.SpeakerEncoder`,
registered here with :func:`register`. The base class holds the interface the
recipe uses (output layer, ``forward``, ``posteriors``, ``replace_head``, the
body/head parameter split, freezing, ``from_config``); a type declares

* ``type_name``; ``MODEL_DEFAULTS`` (its ``model`` section, ``type`` included),
  ``ARCH_KEYS`` (the keys that fix parameter shapes), optionally
  ``FRONTEND_DEFAULTS`` (its ``frontend`` section) and ``SECTION_DEFAULTS``
  (changed defaults of ``data``/``extract``/``train``), and ``check_config(cfg, where)``;
* ``frontend(cfg, extra, exp_dir)``: the feature front-end that turns audio, or
  a data dir's stored features, into the network input
  (:mod:`pyxv.features.frontend`);
* its layers, ``embed(x)`` ``(B, T, D) -> (B, E)``, ``embedding_layers()``
  (the modules up to the embedding), and ``embed_utterances`` where whole
  utterances are not the base's averaged equal-length chunks.

Adding a type is one such class plus its line in :data:`BUILTIN`. An unknown
name is a ``KeyError`` that lists the known ones.
"""
from __future__ import annotations

import importlib

# type name -> module that registers it (imported on first use)
BUILTIN = {
    "resnet": "pyxv.nnet.xvector",
    "ge2e_lstm": "pyxv.nnet.ge2e",
}

_TYPES: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` the encoder of ``model.type: cls.type_name``."""
    _TYPES[cls.type_name] = cls
    return cls


def encoder_class(name: str) -> type:
    if name not in _TYPES and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _TYPES:
        raise KeyError(f"unknown encoder type '{name}' (known: {', '.join(encoder_types())})")
    return _TYPES[name]


def encoder_types() -> list[str]:
    return sorted(set(BUILTIN) | set(_TYPES))
