"""What every speaker encoder is: :class:`SpeakerEncoder`, the base class of the
``model.type`` classes (:mod:`pyxv.nnet.registry`).

    input features (B, T, D)
    -> embed(x)                  (B, E)   the subclass's network: the embedding
    -> head_input(e)             (B, E)   what the output layer sees (identity unless the type says)
    -> head                      (B, K)   losses.MarginHead from model.loss/margin/scale/anneal_*;
                                          None for 0 classes (an imported encoder)

The base owns the output layer and everything built on it (``forward``,
``logits_from_embedding``, ``posteriors``, ``replace_head``), the split of the
parameters into body and head (the trainer's two learning-rate groups),
``num_parameters``, freezing the layers that make the embedding
(``train.freeze: embedding``), and the registry's class attributes with their
defaults. A subclass adds its layers, ``embed``, ``embedding_layers``,
``frontend``, its ``MODEL_DEFAULTS``/``ARCH_KEYS`` (and any other defaults and
``check_config``), and ``embed_utterances`` where whole utterances need more
than the equal-length chunks of :func:`pyxv.nnet.utterance.embed_in_chunks`.

The output layer is the attribute ``head``, so its weights are the state-dict
keys ``head.*``: :func:`state_mismatch` and :func:`without_head` compare and
cut state dicts by that rule.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .config import validate_config
from .losses import MarginHead
from .utterance import embed_in_chunks

# The model keys that configure the output layer (MarginHead's options).
HEAD_KEYS = ("loss", "margin", "scale", "anneal_base", "anneal_gamma", "anneal_power", "anneal_min")
HEAD_PREFIX = "head."   # state-dict keys of the output layer


def is_head_key(key: str) -> bool:
    return key.startswith(HEAD_PREFIX)


def without_head(state: Mapping) -> dict:
    """``state`` without the output layer's entries."""
    return {k: v for k, v in state.items() if not is_head_key(k)}


def state_mismatch(own: Mapping, state: Mapping, *, skip_head: bool = False, limit: int | None = 5) -> str:
    """What keeps ``state`` from loading into a model whose state dict is ``own``:
    ``"missing keys [...]; unexpected keys [...]; wrong shapes [...]"`` (each list
    cut to ``limit``), or ``""`` when it fits. ``skip_head``: ``head.*`` may be absent."""
    cut = (lambda xs: xs[:limit]) if limit else (lambda xs: xs)
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and tuple(getattr(v, "shape", ())) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and not (skip_head and is_head_key(k))]
    unexpected = [k for k in state if k not in own]
    parts = [f"missing keys {cut(missing)}" if missing else "", f"unexpected keys {cut(unexpected)}" if unexpected
             else "", f"wrong shapes {cut(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


class SpeakerEncoder(nn.Module):
    """Base of the registered encoders (see the module doc).

    A subclass's ``__init__`` calls ``super().__init__(input_dim, embed_dim)``,
    builds its layers, and ends with ``self._add_output_layer(num_classes,
    **head_options)`` (last, so the head's keys and random draws come after the
    body's)."""

    # The registry's class attributes (pyxv.nnet.registry, pyxv.nnet.config).
    type_name: str = ""
    MODEL_DEFAULTS: dict = {}        # the model section, "type" included
    ARCH_KEYS: tuple = ()            # model keys that fix parameter shapes
    FRONTEND_DEFAULTS: dict = {}     # the frontend section
    SECTION_DEFAULTS: dict = {}      # changed defaults of data/extract/train

    head: MarginHead | None

    def __init__(self, input_dim: int, embed_dim: int):
        super().__init__()
        self.input_dim, self.embed_dim = input_dim, embed_dim

    # ------------------------------------------------------------- config
    @classmethod
    def from_config(cls, cfg: Mapping, num_classes: int) -> "SpeakerEncoder":
        """Build from a (possibly partial) config dict, validated first;
        ``num_classes`` 0: no output layer."""
        cfg = validate_config(cfg)
        return cls(num_classes=num_classes, **cls.init_args(cfg))

    @classmethod
    def init_args(cls, cfg: dict) -> dict:
        """The constructor's arguments from a validated config: the model section."""
        return {k: v for k, v in cfg["model"].items() if k != "type"}

    @staticmethod
    def check_config(cfg: dict, where: str = "") -> None:
        """Raise ConfigError on values the types alone do not rule out."""

    @staticmethod
    def frontend(cfg: dict, extra: dict | None = None, exp_dir=None):
        """The feature front-end of this type (:mod:`pyxv.features.frontend`)."""
        raise NotImplementedError

    # ------------------------------------------------------ the subclass's network
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, E)`` embeddings."""
        raise NotImplementedError

    def embedding_layers(self) -> list[nn.Module]:
        """The modules up to the embedding (frozen by ``train.freeze: embedding``;
        their weights identify the embedding space, :mod:`pyxv.speaker`)."""
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"{type(self).__name__} expects (batch, frames, {self.input_dim}) input, "
                             f"got {tuple(x.shape)}")

    @torch.no_grad()
    def embed_utterances(self, mats: Sequence[np.ndarray], *, chunk_frames: int = 6000, batch_frames: int = 20000,
                         device=None, amp=None, **_) -> np.ndarray:
        """``(N, E)`` embeddings of whole utterances on the model's device: the
        mean over nearly equal chunks of at most ``chunk_frames`` frames."""
        return embed_in_chunks(self, mats, chunk_frames=chunk_frames, batch_frames=batch_frames, device=device,
                               amp=amp)

    def head_input(self, emb: torch.Tensor) -> torch.Tensor:
        """The embedding as the output layer takes it."""
        return emb

    # ------------------------------------------------------------- output layer
    def _add_output_layer(self, num_classes: int, **options) -> None:
        unknown = sorted(set(options) - set(HEAD_KEYS))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown output-layer options {unknown}")
        self._head_kw = dict(options)
        self.head = MarginHead(self.embed_dim, num_classes, **options) if num_classes > 0 else None

    @property
    def num_classes(self) -> int:
        return 0 if self.head is None else self.head.num_classes

    def replace_head(self, num_classes: int, loss: str | None = None, margin: float | None = None,
                     scale: float | None = None) -> None:
        """A new, randomly initialised output layer with ``num_classes`` outputs
        (loss, margin and scale: the old layer's unless given)."""
        kw = dict(self._head_kw)
        if self.head is not None:
            kw.update(loss=self.head.loss, margin=self.head.margin, scale=self.head.scale)
        kw.update({k: v for k, v in (("loss", loss), ("margin", margin), ("scale", scale)) if v is not None})
        device = next(self.parameters()).device
        self.head = MarginHead(self.embed_dim, num_classes, **kw).to(device)

    def _need_head(self) -> MarginHead:
        if self.head is None:
            raise RuntimeError(f"this {self.type_name} encoder has no output layer (built for 0 classes, e.g. an "
                               f"imported speaker encoder); replace_head(num_classes) adds one")
        return self.head

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, with_plain: bool = False):
        """Logits ``(B, K)``: with ``target``, the margin logits whose cross-entropy
        is the training loss; ``with_plain`` also returns the plain logits
        (no margin, no gradient) for accuracy."""
        head = self._need_head()
        h = self.head_input(self.embed(x))
        out = head(h, target)
        if with_plain:
            with torch.no_grad():
                plain = out if target is None else head(h.detach(), None)
            return out, plain
        return out

    def logits_from_embedding(self, emb: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self._need_head()(self.head_input(emb), target)

    @torch.no_grad()
    def posteriors(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x).float(), dim=-1)

    # ------------------------------------------------------------- parameters
    def head_parameters(self) -> list[nn.Parameter]:
        return [] if self.head is None else list(self.head.parameters())

    def body_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the output layer's, in registration order."""
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.parameters() if id(p) not in head]

    def num_parameters(self, head: bool = True) -> int:
        return sum(p.numel() for p in (self.parameters() if head else self.body_parameters()))

    def freeze_embedding(self) -> list[nn.Module]:
        """Stop training the layers up to the embedding (``train.freeze:
        embedding``); returns them, for the trainer to keep in eval mode (batch
        norm statistics frozen too)."""
        layers = self.embedding_layers()
        for m in layers:
            for p in m.parameters():
                p.requires_grad_(False)
        return layers
