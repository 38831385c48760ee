"""What a policy needs to know about a tokenizer, as tensors.

Policies run on batches of token ids, often on an accelerator, so everything they ask of
the tokenizer (which ids are special, which tokens continue a word, how the tokens look)
is computed once here and kept as tensors/lists instead of calling the tokenizer per batch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass
class VocabInfo:
    vocab_size: int
    mask_id: int
    pad_id: int
    special_ids: torch.Tensor  # [S] long: never masked, never used as random replacement
    continues_word: torch.Tensor  # [V] bool: token glues onto the previous one ("##ing")
    tokens: list[str]  # id -> token string (for heuristics that look at surface forms)
    fingerprint: str  # sha256 of the vocabulary; a learned policy refuses another one
    name_or_path: str = ""

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "VocabInfo":
        if tokenizer is None:
            raise ConfigError("a tokenizer is required to build a masking policy")
        if tokenizer.mask_token_id is None:
            raise ConfigError(f"tokenizer {tokenizer.name_or_path!r} has no mask token; MLM needs one")
        vocab = tokenizer.get_vocab()
        size = max(len(tokenizer), max(vocab.values()) + 1)
        tokens = [""] * size
        for tok, idx in vocab.items():
            tokens[idx] = tok
        special = sorted(set(tokenizer.all_special_ids))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else special[0]
        return cls(
            vocab_size=size,
            mask_id=int(tokenizer.mask_token_id),
            pad_id=int(pad_id),
            special_ids=torch.tensor(special, dtype=torch.long),
            continues_word=_continuation_table(tokens),
            tokens=tokens,
            fingerprint=vocab_fingerprint(tokens),
            name_or_path=str(getattr(tokenizer, "name_or_path", "")),
        )


def vocab_fingerprint(tokens: list[str]) -> str:
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()[:16]


def _continuation_table(tokens: list[str]) -> torch.Tensor:
    """Which tokens continue the previous token's word, for the three common vocab styles.

    WordPiece marks continuations ("##ing"); byte-level BPE (GPT-2/RoBERTa/BART) and
    SentencePiece mark word *starts* ("Ġthe", "▁the") instead, so there every token without
    the marker continues a word.
    """
    if any(t.startswith("##") for t in tokens):
        flags = [t.startswith("##") and len(t) > 2 for t in tokens]
    elif sum(t.startswith("Ġ") for t in tokens) > len(tokens) // 10:
        flags = [not t.startswith("Ġ") and t.isalnum() for t in tokens]
    elif sum(t.startswith("▁") for t in tokens) > len(tokens) // 10:
        flags = [not t.startswith("▁") and t.isalnum() for t in tokens]
    else:
        flags = [False] * len(tokens)
    return torch.tensor(flags, dtype=torch.bool)


def maskable_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, special_ids: torch.Tensor
) -> torch.Tensor:
    """[B, T] bool: real (non-padding) tokens that are not special tokens."""
    ok = ~torch.isin(input_ids, special_ids.to(input_ids.device))
    if attention_mask is not None:
        ok &= attention_mask.bool()
    return ok


def word_ids_from_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, continues_word: torch.Tensor) -> torch.Tensor:
    """[B, T] long word index per token (0, 1, ... within each row), -1 where not maskable.

    A token starts a new word unless the vocabulary marks it as a continuation and the token
    before it is maskable too (a continuation right after [CLS] starts a word).
    """
    cont = continues_word.to(input_ids.device)[input_ids.clamp(0, continues_word.numel() - 1)]
    prev_ok = torch.zeros_like(maskable)
    prev_ok[:, 1:] = maskable[:, :-1]
    starts = maskable & ~(cont & prev_ok)
    ids = torch.cumsum(starts.long(), dim=1) - 1
    return torch.where(maskable, ids, torch.full_like(ids, -1))
