"""Speaker encoders by type name: the ``model.type`` of an x-vector config.

Every type is an ``nn.Module`` class registered here with :func:`register`.
It declares

* ``type_name``; ``MODEL_DEFAULTS`` (its ``model`` section, ``type`` included),
  ``ARCH_KEYS`` (the keys that fix parameter shapes), optionally
  ``FRONTEND_DEFAULTS`` (its ``frontend`` section) and ``SECTION_DEFAULTS``
  (changed defaults of ``data``/``extract``/``train``); ``check_config(cfg, where)``;
* ``frontend(cfg, extra, exp_dir)``: the feature front-end that turns audio, or
  a data dir's stored features, into the network input
  (:mod:`pyxv.features.frontend`);
* ``from_config(cfg, num_classes)`` (``num_classes`` 0: no output layer);
* the network interface the recipe uses: ``embed(x)`` ``(B, T, D) -> (B, E)``,
  ``embed_utterances(mats, ..., device=None)`` (whole utterances, the type's own
  way, on the model's device: :func:`pyxv.device.input_device`),
  ``forward(x, target=None, with_plain=False)``, ``logits_from_embedding``,
  ``posteriors``, ``replace_head``, ``embedding_layers()`` (the modules up to
  the embedding, for ``train.freeze``), ``num_classes``, ``embed_dim``,
  ``input_dim``, ``num_parameters(head=True)``.

Adding a type is one module that defines such a class plus its line in
:data:`BUILTIN`.
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
