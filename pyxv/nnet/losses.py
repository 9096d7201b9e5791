"""Output layers with margin softmax losses for speaker (or emotion) classification.

Every head maps an embedding ``(B, E)`` to logits ``(B, C)``. Called with the
targets during training it returns the *margin* logits whose cross-entropy is
the loss; called without targets it returns plain logits (for accuracy and
posteriors):

- ``softmax``: an affine layer, ordinary cross-entropy.
- ``asoftmax`` (SphereFace, Liu et al. 2017), the paper's loss: weights
  normalised, target logit ``||x|| psi(theta)``, ``psi = (-1)^k cos(m theta) - 2k``
  with ``k = floor(m theta / pi)``, annealed as
  ``(lambda ||x|| cos(theta) + ||x|| psi(theta)) / (1 + lambda)`` with
  ``lambda = max(lambda_min, base * (1 + gamma * it)^-power)``.
- ``amsoftmax`` (additive margin): target ``s (cos theta - m)``, others ``s cos``.
- ``aamsoftmax`` (additive angular margin, ArcFace): target ``s cos(theta + m)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MarginHead(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, loss: str = "asoftmax", margin: float = 2.0,
                 scale: float = 30.0, anneal_base: float = 1000.0, anneal_gamma: float = 0.12,
                 anneal_power: float = 1.0, anneal_min: float = 5.0):
        super().__init__()
        if loss not in ("softmax", "asoftmax", "amsoftmax", "aamsoftmax"):
            raise ValueError(f"unknown loss '{loss}'")
        self.loss, self.margin, self.scale = loss, float(margin), float(scale)
        self.num_classes = num_classes
        self.anneal = (anneal_base, anneal_gamma, anneal_power, anneal_min)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if loss == "softmax" else None
        # Training iterations seen, for A-softmax annealing (saved with the model).
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"loss={self.loss}, classes={self.num_classes}, m={self.margin}, s={self.scale}"

    def lambda_(self) -> torch.Tensor:
        # Computed on the iteration counter's device: float() of it would make the host
        # wait for the GPU at every step.
        base, gamma, power, lmin = self.anneal
        return (base * (1.0 + gamma * self.iteration.double()) ** (-power)).clamp(min=lmin)

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        if self.loss == "softmax":
            return F.linear(x.float(), self.weight.float(), self.bias.float())
        cos = self.cosine(x).clamp(-1.0, 1.0)
        if self.loss == "asoftmax":
            norm = x.float().norm(dim=1, keepdim=True)
            logits = norm * cos
            if target is None:
                return logits
            m = int(self.margin)
            cos_t = cos.gather(1, target[:, None])
            theta = torch.acos(cos_t.clamp(-1 + 1e-7, 1 - 1e-7))
            k = torch.floor(m * theta / math.pi)
            sign = 1.0 - 2.0 * torch.remainder(k, 2)
            psi = sign * torch.cos(m * theta) - 2.0 * k
            lam = self.lambda_()
            if self.training:
                self.iteration += 1
            t_logit = norm * (lam * cos_t + psi) / (1.0 + lam)
            return logits.scatter(1, target[:, None], t_logit)
        logits = self.scale * cos
        if target is None:
            return logits
        cos_t = cos.gather(1, target[:, None])
        if self.loss == "amsoftmax":
            t = cos_t - self.margin
        else:
            theta = torch.acos(cos_t.clamp(-1 + 1e-7, 1 - 1e-7))
            # Past pi - m the angle would wrap round; fall back to a linear penalty (ArcFace's rule).
            t = torch.where(theta + self.margin < math.pi, torch.cos(theta + self.margin),
                            cos_t - self.margin * math.sin(self.margin))
        return logits.scatter(1, target[:, None], self.scale * t)
