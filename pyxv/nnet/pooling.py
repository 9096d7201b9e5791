"""Multi-head attention pooling of the paper, eq. (1)-(2).

Head ``h`` has a learnable centre ``mu_h`` (D) and scale ``s_h``. Over the
frames ``x_t`` (D) of one utterance:

    w_{h,t} = exp(-s_h ||x_t - mu_h||) / sum_t' exp(-s_h ||x_t' - mu_h||)   (1)
    e_h     = sum_t w_{h,t} x_t                                             (2)

and the ``H`` head outputs are concatenated into an ``H*D`` vector.
"""
from __future__ import annotations

import torch
from torch import nn


class MultiHeadAttentionPooling(nn.Module):
    """``(B, T, D) -> (B, H*D)``; :meth:`weights` gives ``w`` of eq. (1) as ``(B, H, T)``.
    Padded frames must be zero (the trunk's masks make them so) and marked
    invalid: zero weight times a zero frame adds nothing to eq. (2)."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.heads, self.eps = dim, heads, eps
        # Centres spread out so heads start different; scale 1 (learned).
        self.mu = nn.Parameter(torch.randn(heads, dim) * 0.5)
        self.scale = nn.Parameter(torch.ones(heads))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``||x_t - mu_h||`` as ``(B, H, T)``; eps keeps the gradient finite at 0.

        Through ``||x||^2 - 2 x.mu + ||mu||^2``: one (T, D) x (D, H) product per
        utterance instead of a (B, H, T, D) tensor of differences. The expansion
        is evaluated in float64 (autocast leaves float64 alone), where its
        cancellation costs nothing at float32 precision even for frames next to
        a centre; the matrices involved are small next to the trunk's.
        """
        x64, mu64 = x.double(), self.mu.double()
        sq = (x64 * x64).sum(-1).unsqueeze(1) - 2.0 * torch.matmul(mu64, x64.transpose(1, 2)) \
            + (mu64 * mu64).sum(-1).view(1, self.heads, 1)                    # (B, H, T)
        return torch.sqrt(sq.clamp_min(0.0) + self.eps).to(x.dtype)

    def weights(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (1): softmax over time of ``-s_h ||x_t - mu_h||``, ``(B, H, T)``.
        ``valid`` (``(B, T)``, 0/1): the frames of each row that belong to its
        utterance (a batch padded to its longest); the others get weight 0, so
        each row is pooled as it would be alone."""
        x = _at_least_float32(x)
        logits = -self.scale.to(x.dtype).view(1, -1, 1) * self.distances(x)
        if valid is not None:
            logits = logits.masked_fill(valid.unsqueeze(1) == 0, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weights(x, valid)                # (B, H, T)
        e = torch.bmm(w, _at_least_float32(x))    # eq. (2): (B, H, D)
        return e.reshape(x.shape[0], self.heads * self.dim)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision input (autocast) is pooled in float32; float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()
