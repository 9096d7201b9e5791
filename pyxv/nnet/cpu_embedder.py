"""A CPU inference copy of the x-vector network, for extraction (stage 4):
its layers traced and compiled with the weights as constants, so it cannot
be trained (not to be confused with ``train.freeze``, which keeps a network's
layers from training).

Two things make CPU extraction fast, both without changing the embeddings
beyond float rounding (1e-6 relative):

- ``torch.jit.freeze`` folds every batch norm into its convolution;
- utterances of different lengths share the rows of one input tensor
  (``utterance.embed_packed``): a few shapes serve every length, where one shape
  per length made oneDNN set up its convolutions anew for nearly every
  utterance. Masks re-zero the frames between utterances after every conv, so
  each sees the zero padding it sees alone.

The weights are baked in, so it is built from a loaded model that will not
change again (an extraction job), never during training.

    net = for_cpu_extraction(net)                # net itself unless a CPU XVectorNet
    embs = net.embed_utterances(mats, chunk_frames=6000)
"""
from __future__ import annotations

import logging
import warnings

import torch

from ..device import input_device
from .utterance import embed_packed
from .xvector import XVectorNet

log = logging.getLogger("pyxv.nnet")


class _MaskedFrames(torch.nn.Module):
    """``(x, mask_0, ..., mask_G-1) -> (B, T', C)``: the trunk over packed rows,
    averaged over frequency (``XVectorNet.frame_features`` with masks)."""

    def __init__(self, net: XVectorNet):
        super().__init__()
        self.trunk = net.trunk

    def forward(self, x: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        return self.trunk(x, list(masks)).mean(dim=2).transpose(1, 2)


class CpuEmbedder:
    """``embed`` and ``embed_utterances`` of an :class:`XVectorNet`, traced
    for the CPU with its weights baked in."""

    device = torch.device("cpu")   # built for CPU only (see for_cpu_extraction)

    def __init__(self, net: XVectorNet, example_frames: int = 512):
        self.embed_dim, self.input_dim = net.embed_dim, net.input_dim
        self.levels = len(net.trunk.layers)
        self._net = net
        x = torch.zeros(1, example_frames, net.input_dim)
        masks = tuple(torch.ones(1, 1, 1, example_frames >> g) for g in range(self.levels))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the tracer's notes on shape checks
            traced = torch.jit.trace(_MaskedFrames(net).eval(), (x,) + masks, check_trace=False)
            # torch.jit.freeze alone: optimize_for_inference's oneDNN layout would convert
            # to and from it around every mask (measured 0.6x).
            self._frames = torch.jit.freeze(traced)

    def eval(self) -> "CpuEmbedder":
        return self

    def frames(self, x: torch.Tensor, masks) -> torch.Tensor:
        return self._frames(x, *masks)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self._net.check_input(x)
        masks = [torch.ones(x.shape[0], 1, 1, -(-x.shape[1] // 2 ** g)) for g in range(self.levels)]
        return self._net.embed_frames(self.frames(x, masks))

    @torch.no_grad()
    def embed_utterances(self, mats, *, chunk_frames: int = 6000, device=None, amp=None, **_):
        """As ``XVectorNet.embed_utterances``; ``batch_frames`` does not apply
        (packed rows go through one at a time)."""
        input_device(self, device)   # a GPU asked of this CPU copy is an error, not a silent CPU run
        return embed_packed(self.frames, self._embed_pieces, mats, levels=self.levels, chunk_frames=chunk_frames)

    def _embed_pieces(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """``(n, E)`` x-vectors of ``n`` pieces' frame-level outputs ``(1, T'_i, C)``:
        each pooled alone (its own length), one embedding-layer product for all."""
        net = self._net
        pooled = torch.cat([net.pool(f) for f in frames])
        return net.embedding(pooled.to(net.embedding.weight.dtype))


def for_cpu_extraction(net, device=None):
    """A :class:`CpuEmbedder` of ``net`` when it is an :class:`XVectorNet`
    on the CPU (``device``, when given, must be the model's); ``net`` itself
    otherwise (other encoders, GPU)."""
    if not isinstance(net, XVectorNet) or input_device(net, device).type != "cpu":
        return net
    try:
        return CpuEmbedder(net)
    except Exception as e:  # noqa: BLE001 - an old torch without these passes: extract with the eager net
        log.warning("cannot compile the network for CPU inference (%s); using it as it is", e)
        return net
