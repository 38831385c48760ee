"""The policy contract: a batch of tokens in, per-token mask probabilities out.

    probs = policy(input_ids, attention_mask, **extras)      # [B, T] float in [0, 1]

Probabilities are exactly 0 at padding and special tokens. ``extras`` are optional
per-token tensors a task or collator may provide, all ``[B, T]``:
- ``word_ids``: word index per token, -1 for special/padding (else derived from "##" etc.);
- ``span_ids``: gold span index per token (entity/answer spans), -1 outside spans;
- ``special_tokens_mask``: 1 where the tokenizer says a token is special.
Policies ignore extras they do not use, so every policy runs on every batch.

A policy may also group tokens into *units* kept whole by the sampler (words, spans,
n-grams) through ``units(...)``. Heuristics and learned networks share this interface, so
everything downstream (sampler, collator, training loops) is policy-agnostic.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from .vocab import VocabInfo, maskable_positions, word_ids_from_tokens


class MaskingPolicy(nn.Module):
    """Base class. Subclasses implement ``scores`` and, when they keep units whole, ``units``."""

    name: str = "base"
    fill: str | None = None
    """The budget fill this policy was validated with (``sampler.FILL_MODES``), used by a
    ``Masker`` whose config names none; None: the sampler's ``DEFAULT_FILL``. Heuristics
    have none; a learned policy records what ``maskpolicy learn`` chose for its task."""

    def __init__(self, tokenizer=None, *, vocab: VocabInfo | None = None) -> None:
        super().__init__()
        self.vocab = vocab if vocab is not None else VocabInfo.from_tokenizer(tokenizer)
        # Buffers follow the policy to its device; not saved (rebuilt from the tokenizer).
        self.register_buffer("special_ids", self.vocab.special_ids.clone(), persistent=False)
        self.register_buffer("continues_word", self.vocab.continues_word.clone(), persistent=False)

    # ---- the contract ---------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **extras) -> torch.Tensor:
        maskable = self.maskable(input_ids, attention_mask, extras.get("special_tokens_mask"))
        probs = self.scores(input_ids, maskable, **extras)
        return torch.where(maskable, probs, torch.zeros_like(probs))

    def scores(self, input_ids: torch.Tensor, maskable: torch.Tensor, **extras) -> torch.Tensor:
        """[B, T] float in [0, 1]; values at non-maskable positions are ignored."""
        raise NotImplementedError

    def units(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, generator=None, **extras):
        """[B, T] long unit index (-1 where not maskable) or None for single tokens.

        ``generator`` (a ``torch.Generator``) seeds random unit boundaries (e.g. span
        lengths), so that masks are reproducible for a seed."""
        return None

    # ---- helpers for subclasses ------------------------------------------------------
    def maskable(self, input_ids, attention_mask=None, special_tokens_mask=None) -> torch.Tensor:
        ok = maskable_positions(input_ids, attention_mask, self.special_ids)
        if special_tokens_mask is not None:
            ok &= ~special_tokens_mask.to(ok.device).bool()
        return ok

    def word_ids(self, input_ids, maskable, word_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] long word index, -1 where not maskable; from extras when given."""
        if word_ids is not None:
            return unit_ids_by_first_position(torch.where(maskable, word_ids.to(input_ids.device).long(), -1))
        return word_ids_from_tokens(input_ids, maskable, self.continues_word)

    def config(self) -> dict:
        """The constructor options of this policy (for run configs and artifacts)."""
        out = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name not in ("self", "tokenizer", "vocab") and hasattr(self, name):
                out[name] = getattr(self, name)
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())


def unit_ids_by_first_position(key: torch.Tensor) -> torch.Tensor:
    """Relabel arbitrary keys (ints in [0, K), -1 = none) so that each unit is named by the
    position of its first token: ids then lie in [0, T), which is all the sampler needs."""
    B, T = key.shape
    valid = key >= 0
    k = torch.where(valid, key, torch.zeros_like(key))
    pos = torch.arange(T, device=key.device).expand(B, T)
    first = torch.full((B, int(k.max().item()) + 1 if k.numel() else 1), T, dtype=torch.long, device=key.device)
    first.scatter_reduce_(1, k, torch.where(valid, pos, torch.full_like(pos, T)), reduce="amin")
    out = torch.gather(first, 1, k)
    return torch.where(valid, out, torch.full_like(out, -1))


def merge_units(word_ids: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Units = groups (spans, n-grams; -1 outside) where present, else words.

    Both [B, T]. A word that overlaps a group joins it, so groups always hold whole words.
    Returns unit ids in [0, T) per row (see ``unit_ids_by_first_position``), -1 where
    word_ids is -1.
    """
    B, T = word_ids.shape
    valid = word_ids >= 0
    # Map every word to the smallest group any of its tokens belongs to (T = none).
    w = torch.where(valid, word_ids, torch.full_like(word_ids, T))
    g = torch.where(valid & (group_ids >= 0), group_ids, torch.full_like(group_ids, T))
    word_group = torch.full((B, T + 1), T, dtype=torch.long, device=word_ids.device)
    word_group.scatter_reduce_(1, w, g, reduce="amin")
    tok_group = torch.gather(word_group, 1, w)
    # Grouped tokens share their group's key; the others keep their word (offset by T+1).
    key = torch.where(tok_group < T, tok_group, T + 1 + w)
    return unit_ids_by_first_position(torch.where(valid, key, torch.full_like(key, -1)))
