"""``random``: BERT's uniform token masking (with the sampler's exact budget)."""
from __future__ import annotations

import torch

from ..base import MaskingPolicy
from ..registry import register_policy


@register_policy("random")
class RandomPolicy(MaskingPolicy):
    def scores(self, input_ids: torch.Tensor, maskable: torch.Tensor, **extras) -> torch.Tensor:
        return maskable.float()
