"""``span``: SpanBERT masking (Joshi et al., 2020).

Each row's words are cut into consecutive spans whose lengths (in words) are i.i.d.
Geometric(p) clipped at ``max_span_words``; every span is a unit, so the sampler masks
whole spans (uniformly chosen, all scores 1) until the budget is used. SpanBERT draws one
span at a time; partitioning the row first and letting the sampler pick spans is the
vectorised equivalent (same span-length law, same exact budget).
"""
from __future__ import annotations

import math

import torch

from ..base import MaskingPolicy, unit_ids_by_first_position
from ..errors import ConfigError
from ..registry import register_policy


def word_ordinals(word_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] long: 0, 1, 2, ... per word in row order, -1 where word_ids is -1.

    ``MaskingPolicy.word_ids`` names words by arbitrary ids (first positions when the
    collator passes its own word_ids); span lengths and neighbours need ordinals.
    """
    valid = word_ids >= 0
    prev = torch.full_like(word_ids, -1)
    prev[:, 1:] = word_ids[:, :-1]
    starts = valid & (word_ids != prev)
    ords = torch.cumsum(starts.long(), dim=1) - 1
    return torch.where(valid, ords, torch.full_like(ords, -1))


@register_policy("span")
class SpanPolicy(MaskingPolicy):
    def __init__(self, tokenizer=None, *, vocab=None, p: float = 0.2, max_span_words: int = 10) -> None:
        super().__init__(tokenizer, vocab=vocab)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 < float(p) <= 1.0):
            raise ConfigError(f"span: p (geometric span-length parameter) must be in (0, 1], got {p!r}")
        if isinstance(max_span_words, bool) or not isinstance(max_span_words, int) or max_span_words < 1:
            raise ConfigError(f"span: max_span_words must be an integer >= 1, got {max_span_words!r}")
        self.p = float(p)
        self.max_span_words = int(max_span_words)

    def scores(self, input_ids: torch.Tensor, maskable: torch.Tensor, **extras) -> torch.Tensor:
        return maskable.float()

    def expected_span_words(self) -> float:
        """Mean of min(Geometric(p), max): sum_{k=1..max} P(L >= k) = (1 - (1-p)^max) / p."""
        return (1.0 - (1.0 - self.p) ** self.max_span_words) / self.p

    def sample_lengths(self, shape, generator=None, device=None) -> torch.Tensor:
        """Long tensor of i.i.d. min(Geometric(p), max_span_words) on {1, 2, ...}."""
        gen_device = generator.device if generator is not None else device
        if self.p >= 1.0:
            return torch.ones(shape, dtype=torch.long, device=device)
        u = torch.rand(shape, generator=generator, device=gen_device).to(device)
        # Inverse CDF: P(L > k) = (1-p)^k  =>  L = floor(log u / log(1-p)) + 1.
        u = u.clamp(min=1e-12)
        lengths = torch.floor(torch.log(u) / math.log1p(-self.p)).long() + 1
        return lengths.clamp(1, self.max_span_words)

    def units(self, input_ids, attention_mask=None, *, generator=None, **extras):
        maskable = self.maskable(input_ids, attention_mask, extras.get("special_tokens_mask"))
        words = word_ordinals(self.word_ids(input_ids, maskable, extras.get("word_ids")))  # [B, T]
        B, T = words.shape
        if B == 0 or T == 0:
            return words
        lengths = self.sample_lengths((B, T), generator, input_ids.device)  # [B, T], T spans always suffice
        # Start inside the first span (offset in [0, L0)), so that span boundaries are not
        # pinned to word 0: ends[b, j] = exclusive end (in words) of span j.
        offset = torch.floor(
            torch.rand(B, generator=generator, device=generator.device if generator is not None else input_ids.device)
            .to(input_ids.device)
            * lengths[:, 0]
        ).long().clamp(max=lengths[:, 0] - 1)  # [B]
        ends = torch.cumsum(lengths, dim=1) - offset[:, None]  # [B, T], ends[:, -1] >= T > any word ordinal
        # Span of word o = number of ends <= o.
        span = torch.searchsorted(ends, words.clamp(min=0).contiguous(), right=True)  # [B, T] in [0, T)
        span = torch.where(words >= 0, span, torch.full_like(span, -1))
        return unit_ids_by_first_position(span)
