"""``whole_word``: uniform over words; all tokens of a chosen word are masked together."""
from __future__ import annotations

import torch

from ..base import MaskingPolicy
from ..registry import register_policy


@register_policy("whole_word")
class WholeWordPolicy(MaskingPolicy):
    def scores(self, input_ids: torch.Tensor, maskable: torch.Tensor, **extras) -> torch.Tensor:
        return maskable.float()

    def units(self, input_ids, attention_mask=None, *, generator=None, **extras):
        maskable = self.maskable(input_ids, attention_mask, extras.get("special_tokens_mask"))
        return self.word_ids(input_ids, maskable, extras.get("word_ids"))
