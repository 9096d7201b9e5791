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
    """``(B, T, D) -> (B, H*D)``; :meth:`weights` gives ``w`` of eq. (1) as ``(B, H, T)``."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.heads, self.eps = dim, heads, eps
        # Centres spread out so heads start different; scale 1 (learned).
        self.mu = nn.Parameter(torch.randn(heads, dim) * 0.5)
        self.scale = nn.Parameter(torch.ones(heads))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """``||x_t - mu_h||`` as ``(B, H, T)``; eps keeps the gradient finite at 0."""
        diff = x.unsqueeze(1) - self.mu.view(1, self.heads, 1, self.dim)  # (B, H, T, D)
        return torch.sqrt(diff.pow(2).sum(-1) + self.eps)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (1): softmax over time of ``-s_h ||x_t - mu_h||``, ``(B, H, T)``."""
        d = self.distances(x.float())
        return torch.softmax(-self.scale.float().view(1, -1, 1) * d, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights(x)                       # (B, H, T)
        e = torch.bmm(w, x.float())               # eq. (2): (B, H, D)
        return e.reshape(x.shape[0], self.heads * self.dim)
