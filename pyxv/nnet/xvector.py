"""The x-vector network of the paper (Table 1), built from a config.

    features (B, T, F)                       F = model.input_dim (23 MFCC)
    -> ResNet trunk (B, C, F/8, T/8)         resnet.ResNetTrunk
    -> mean over frequency (B, T/8, C)
    -> multi-head attention pooling (B, H*C) pooling.MultiHeadAttentionPooling, eq. (1)-(2)
    -> FC to E (B, E)                        the x-vector (before any non-linearity)
    -> batch norm -> output layer (B, K)     losses.MarginHead (A-softmax, AM, AAM, softmax)

The interface (forward, posteriors, replace_head, freezing) is
:class:`pyxv.nnet.encoder.SpeakerEncoder`'s; this class adds the layers,
``embed`` and the batching of whole utterances::

    net = XVectorNet.from_config(cfg, num_classes)   # cfg: validated dict (config.py)
    # (the recipe builds any registered type with pyxv.nnet.config.build_encoder)
    emb = net.embed(x)           # (B, E) x-vectors
    logits = net(x)              # (B, K) plain logits; net(x, target) gives margin logits
    post = net.posteriors(x)     # (B, K) softmax of the plain logits
    net.replace_head(k, loss="softmax")  # new output layer (e.g. emotions)
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError
from .encoder import SpeakerEncoder
from .pooling import MultiHeadAttentionPooling
from .registry import register
from .resnet import ResNetTrunk
from .utterance import embed_utterances


@register
class XVectorNet(SpeakerEncoder):
    type_name = "resnet"
    MODEL_DEFAULTS = {               # the model section of a resnet config
        "type": "resnet",
        "input_dim": 23,             # feature dimension (23 MFCC, 25 GeMAPS LLDs ...)
        "channels": [16, 32, 64, 128],
        "blocks": [3, 4, 6, 3],      # basic residual blocks per group (ResNet-34)
        "first_kernel": 7,           # first conv kernel size (Table 1: 7x7)
        "heads": 32,                 # attention heads of the pooling (eq. 1-2)
        "embed_dim": 400,            # x-vector dimension
        "loss": "asoftmax",          # asoftmax | amsoftmax | aamsoftmax | softmax
        "margin": 2.0,               # m (integer for A-softmax; cosine/angle margin otherwise)
        "scale": 30.0,               # s of AM/AAM-softmax
        "anneal_base": 1000.0,       # A-softmax annealing: lambda = max(min, base*(1+gamma*it)^-power)
        "anneal_gamma": 0.12,
        "anneal_power": 1.0,
        "anneal_min": 5.0,
    }
    ARCH_KEYS = ("input_dim", "channels", "blocks", "first_kernel", "heads", "embed_dim")

    def __init__(self, input_dim: int = 23, channels=(16, 32, 64, 128), blocks=(3, 4, 6, 3),
                 first_kernel: int = 7, heads: int = 32, embed_dim: int = 400, num_classes: int = 2,
                 loss: str = "asoftmax", margin: float = 2.0, scale: float = 30.0, **head_kw):
        super().__init__(input_dim, embed_dim)
        self.trunk = ResNetTrunk(channels, blocks, first_kernel)
        c = self.trunk.out_channels
        self.pool = MultiHeadAttentionPooling(c, heads)
        self.embedding = nn.Linear(heads * c, embed_dim)
        self.embed_bn = nn.BatchNorm1d(embed_dim)
        self._add_output_layer(num_classes, loss=loss, margin=margin, scale=scale, **head_kw)

    @staticmethod
    def check_config(cfg: dict, where: str = "") -> None:
        m = cfg["model"]
        if len(m["channels"]) != len(m["blocks"]) or not m["channels"]:
            raise ConfigError(f"{where}model.blocks: needs one entry per model.channels entry")
        if min(m["channels"]) < 1 or min(m["blocks"]) < 1:
            raise ConfigError(f"{where}model.channels/blocks: must be positive")
        for k in ("input_dim", "heads", "embed_dim", "first_kernel"):
            if m[k] < 1:
                raise ConfigError(f"{where}model.{k}: must be positive")

    @staticmethod
    def frontend(cfg: dict, extra: dict | None = None, exp_dir=None):
        """MFCC (the Kaldi confs kept with the model) -> sliding CMN -> voiced frames."""
        from ..features.frontend import MfccVadFrontEnd

        return MfccVadFrontEnd.from_model(cfg, extra or {}, exp_dir)

    def embedding_layers(self) -> list[nn.Module]:
        return [self.trunk, self.pool, self.embedding]

    def embed_utterances(self, mats, *, chunk_frames: int = 6000, batch_frames: int = 20000, device=None,
                         amp=None, batching: str = "auto", **_):
        """``(N, E)`` x-vectors of whole utterances: an utterance longer than
        ``chunk_frames`` is cut into nearly equal chunks whose x-vectors are averaged.

        ``batching``: ``padded`` (chunks of any length share batches of up to
        ``batch_frames`` frames, padded with masks: :func:`utterance.embed_padded`),
        ``equal`` (only chunks of the same length share a batch:
        :func:`utterance.embed_in_chunks`), ``auto`` (padded off the CPU, where
        one utterance per batch would cost a host sync each; equal on the CPU,
        whose fast path is :mod:`pyxv.nnet.cpu_embedder`)."""
        return embed_utterances(self, mats, chunk_frames=chunk_frames, batch_frames=batch_frames, device=device,
                                amp=amp, batching=batching)

    def frame_features(self, x: torch.Tensor, masks=None) -> torch.Tensor:
        """``(B, T, F) -> (B, T', C)``: trunk output averaged over frequency
        (``masks``: see :meth:`embed`)."""
        self.check_input(x)
        return self.trunk(x, masks).mean(dim=2).transpose(1, 2)

    def embed(self, x: torch.Tensor, masks=None) -> torch.Tensor:
        """``(B, T, F) -> (B, E)`` x-vectors (affine output, no non-linearity).

        ``masks``, for rows of different lengths padded with zeros: one
        ``(B, 1, 1, T_g)`` 0/1 map of each row's own frames per time resolution
        of the trunk (:func:`utterance.frame_masks`); each row's x-vector is then
        the one it has alone."""
        frames = self.frame_features(x, masks)
        return self.embed_frames(frames, None if masks is None else masks[-1].reshape(len(frames), -1))

    def embed_frames(self, frames: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T', C)`` frame-level outputs -> ``(B, E)``: pooling (over the
        ``valid`` frames of each row, ``(B, T')``, when given) and the embedding layer."""
        return self.embedding(self.pool(frames, valid).to(self.embedding.weight.dtype))

    def head_input(self, emb: torch.Tensor) -> torch.Tensor:
        """The output layer sees the x-vector through a batch norm."""
        return self.embed_bn(emb)
