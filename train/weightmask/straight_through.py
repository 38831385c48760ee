"""The binary mask on one weight, as a ``torch.nn.utils.parametrize`` parametrization.

``ScoreMask`` holds a real-valued score tensor ``s`` of the weight's shape [out, in]. The
layer's ``weight`` then reads ``W * 1[s > tau]``: an exactly binary mask in the forward
pass, while the backward pass hands the mask's gradient straight to ``s``
(straight-through estimator): ``dL/ds = dL/dW_masked * W``. The frozen ``W`` stays in
``module.parametrizations.weight.original``; the module class is unchanged, so the model
remains an ordinary Hugging Face model (forward, ``generate``, saving).
"""
from __future__ import annotations

import torch
from torch import nn


def straight_through_mask(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """``1[scores > tau]`` in the forward pass (exactly 0 or 1: ``s - s.detach()`` is 0),
    identity in the backward pass."""
    hard = (scores > tau).to(scores.dtype)
    return hard + (scores - scores.detach())


def initial_scores(shape: torch.Size, *, tau: float, sparsity: float, width: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on [tau - sparsity * width, tau + (1 - sparsity) * width): a share
    ``sparsity`` of the scores (in expectation) starts below ``tau``, i.e. masked."""
    low = tau - sparsity * width
    return low + width * torch.rand(shape, generator=generator)


class ScoreMask(nn.Module):
    """Parametrization ``W -> W * 1[s > tau]`` with trainable scores ``s``."""

    def __init__(self, scores: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores)
        self.tau = float(tau)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * straight_through_mask(self.scores, self.tau).to(weight.dtype)

    def keep(self) -> torch.Tensor:
        """The binary mask [out, in], bool: True where the weight is kept."""
        return self.scores.detach() > self.tau


class FixedMask(nn.Module):
    """Parametrization ``W -> W * m`` with a stored binary mask (a loaded artifact, no
    training): ``m`` is a bool buffer, so the masked model's forward needs no scores."""

    def __init__(self, keep: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", keep.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)

    def keep(self) -> torch.Tensor:
        return self.mask
