"""``salient_span``: salient span masking (Guu et al., 2020, REALM): mask named entities
and dates, each kept whole.

With gold spans (``span_ids`` extra, e.g. entity/answer spans from the task) a row masks
its span tokens with probability 1 and everything else with ``background``. Rows without
any gold span token use a surface heuristic (no NER model is available here):

(a) a run of consecutive capitalised words that does not start a sentence (sentence start
    = first word after a special token / the row start, or after ".", "!", "?"); a run
    that starts a sentence counts from its second word on;
(b) a number: a word of digits, possibly with "," or "." inside; "1 , 000" (how a BERT
    pre-tokenizer splits "1,000") is joined into one span;
(c) a year (4 digits, 1000-2099) -- a number, also used for dates;
(d) a date: a month name (single-token word; capitalised, or lowercase when the vocab is
    uncased) with adjacent day numbers (1-31) and/or a year, e.g. "March 3 , 1987",
    "3 March 1987", "March 1987", joined into one span.

With an uncased vocabulary (a) finds nothing: only numbers and dates are found.
All surface tests are per-vocabulary-token tables built once; the batch logic is
vectorised over words.
"""
from __future__ import annotations

import torch

from ..base import MaskingPolicy, merge_units, unit_ids_by_first_position
from ..errors import ConfigError
from ..registry import register_policy
from .span import word_ordinals

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
_DIGITS = set("0123456789")


def _surface(token: str) -> str:
    """Token text without WordPiece "##" or byte-BPE/SentencePiece word-start markers."""
    if token.startswith("##") and len(token) > 2:
        return token[2:]
    if token[:1] in ("Ġ", "▁") and len(token) > 1:
        return token[1:]
    return token


def _is_special_looking(token: str) -> bool:
    return (token.startswith("[") and token.endswith("]")) or (token.startswith("<") and token.endswith(">"))


@register_policy("salient_span")
class SalientSpanPolicy(MaskingPolicy):
    def __init__(self, tokenizer=None, *, vocab=None, use_gold_spans: bool = True, background: float = 0.0) -> None:
        super().__init__(tokenizer, vocab=vocab)
        if not isinstance(use_gold_spans, bool):
            raise ConfigError(f"salient_span: use_gold_spans must be true or false, got {use_gold_spans!r}")
        if isinstance(background, bool) or not isinstance(background, (int, float)) or not 0.0 <= background <= 1.0:
            raise ConfigError(f"salient_span: background must be in [0, 1], got {background!r}")
        self.use_gold_spans = use_gold_spans
        self.background = float(background)
        surf = [_surface(t) for t in self.vocab.tokens]
        # Month names match capitalised only in a cased vocab ("march" is also a verb).
        self.cased = any(
            any(c.isupper() for c in s) for t, s in zip(self.vocab.tokens, surf) if not _is_special_looking(t)
        )
        months = set(MONTHS) if not self.cased else {m.capitalize() for m in MONTHS}
        digits = [bool(s) and set(s) <= _DIGITS for s in surf]
        tables = {  # name -> [V] tensor, buffers so they follow the policy's device
            "tok_cap": [s[:1].isupper() for s in surf],
            "tok_start_digit": [s[:1] in _DIGITS and s != "" for s in surf],
            "tok_numchar": [bool(s) and set(s) <= _DIGITS | {",", "."} for s in surf],
            "tok_digits": digits,
            "tok_month": [s in months for s in surf],
            "tok_sent_end": [s in (".", "!", "?") for s in surf],
            "tok_comma": [s == "," for s in surf],
        }
        for name, flags in tables.items():
            self.register_buffer(name, torch.tensor(flags, dtype=torch.bool), persistent=False)
        # Digit count and value of pure-digit tokens (value only needed up to 4 digits).
        ndigits = [len(s) if d else 0 for s, d in zip(surf, digits)]
        self.register_buffer("tok_ndigits", torch.tensor(ndigits, dtype=torch.long), persistent=False)
        self.register_buffer(
            "tok_value",
            torch.tensor([int(s) if d and len(s) <= 4 else 0 for s, d in zip(surf, digits)], dtype=torch.long),
            persistent=False,
        )

    # ---- contract ---------------------------------------------------------------------
    def scores(self, input_ids: torch.Tensor, maskable: torch.Tensor, **extras) -> torch.Tensor:
        _, group = self._groups(input_ids, maskable, extras)
        background = torch.full_like(group, self.background, dtype=torch.float32)
        return torch.where(group >= 0, torch.ones_like(background), background)

    def units(self, input_ids, attention_mask=None, *, generator=None, **extras):
        maskable = self.maskable(input_ids, attention_mask, extras.get("special_tokens_mask"))
        words, group = self._groups(input_ids, maskable, extras)
        return merge_units(words, group)

    # ---- spans --------------------------------------------------------------------------
    def _groups(self, input_ids, maskable, extras):
        """(word ids, group ids), both [B, T] long, -1 = none; group = gold or salient span."""
        words = self.word_ids(input_ids, maskable, extras.get("word_ids"))
        gold = extras.get("span_ids") if self.use_gold_spans else None
        if gold is None:
            return words, self.heuristic_spans(input_ids, maskable, words)
        gold = torch.where(maskable, gold.to(input_ids.device).long(), torch.full_like(input_ids, -1))
        gold = unit_ids_by_first_position(gold)  # arbitrary span indices -> ids in [0, T)
        has_gold = (gold >= 0).any(dim=1, keepdim=True)  # [B, 1]
        if bool(has_gold.all()):
            return words, gold
        return words, torch.where(has_gold, gold, self.heuristic_spans(input_ids, maskable, words))

    def heuristic_spans(self, input_ids: torch.Tensor, maskable: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """[B, T] long salient-span id per token (word ordinal of the span start), -1 outside."""
        B, T = input_ids.shape
        ords = word_ordinals(words)  # [B, T]
        valid = ords >= 0
        slot = torch.where(valid, ords, torch.full_like(ords, T))  # T = dump column
        prev_ords = torch.full_like(ords, -1)
        prev_ords[:, 1:] = ords[:, :-1]
        starts = valid & (ords != prev_ords)  # first token of each word
        ids = input_ids.clamp(0, self.tok_cap.numel() - 1)

        def word_sum(x: torch.Tensor) -> torch.Tensor:  # [B, T] token values -> [B, T] per word ordinal
            out = torch.zeros(B, T + 1, dtype=torch.long, device=ids.device)
            return out.scatter_add_(1, slot, (x.long() * valid))[:, :T]

        def first(table: torch.Tensor) -> torch.Tensor:  # flag of the word's first token
            return word_sum(table[ids] & starts) > 0

        ntok = word_sum(valid)
        exists = ntok > 0

        def every(table: torch.Tensor) -> torch.Tensor:  # flag of all the word's tokens
            return exists & (word_sum(~table[ids]) == 0)

        # Numbers: value of pure-digit words from their tokens ("19" "##87" -> 1987).
        nd_tok = self.tok_ndigits[ids] * valid
        ndig = word_sum(nd_tok)  # [B, T] digits per word
        cum = torch.cumsum(nd_tok, dim=1)
        before = torch.zeros(B, T + 1, dtype=torch.long, device=ids.device)
        before.scatter_add_(1, torch.where(starts, slot, torch.full_like(slot, T)), (cum - nd_tok) * starts)
        within = cum - torch.gather(before, 1, slot)  # digits of the word up to this token
        suffix = (torch.gather(torch.cat([ndig, ndig.new_zeros(B, 1)], 1), 1, slot) - within).clamp(0, 4)
        value = word_sum(self.tok_value[ids] * torch.pow(10, suffix))
        digits = every(self.tok_digits)
        number = first(self.tok_start_digit) & every(self.tok_numchar)
        year = digits & (ndig == 4) & (value >= 1000) & (value <= 2099)
        day = digits & (ndig <= 2) & (value >= 1) & (value <= 31)
        month = first(self.tok_month) & (ntok == 1)
        comma = first(self.tok_comma) & (ntok == 1)
        sent_end = first(self.tok_sent_end)

        def prv(x):  # x[i-1], False at 0
            return torch.cat([x.new_zeros(B, 1), x[:, :-1]], 1)

        def nxt(x):  # x[i+1], False at the end
            return torch.cat([x[:, 1:], x.new_zeros(B, 1)], 1)

        # Sentence starts: after a special token / row start, or after . ! ?
        prev_tok_ok = torch.cat([maskable.new_zeros(B, 1), maskable[:, :-1]], 1)
        sent_start = (word_sum(starts & ~prev_tok_ok) > 0) | prv(sent_end)
        cap = first(self.tok_cap) & ~sent_start
        # link[i]: word i and word i+1 are in the same span.
        link = cap & nxt(cap)
        thousands = number & nxt(comma) & nxt(nxt(digits & (ndig == 3)))  # "1 , 000"
        link |= thousands | prv(thousands)
        date_link = (month & nxt(day | year)) | (day & nxt(month)) | (prv(month) & day & nxt(year))
        date_comma = prv(month) & day & nxt(comma) & nxt(nxt(year))  # "March 3 , 1987"
        link |= date_link | date_comma | prv(date_comma)
        salient = cap | number | (link & (month | comma)) | (prv(link) & (month | comma))
        link &= salient & nxt(salient)
        # Span id per word: ordinal of its first word; then back to tokens.
        span_start = salient & ~prv(link)
        pos = torch.arange(T, device=ids.device).expand(B, T)
        first_word = torch.cummax(torch.where(span_start, pos, torch.zeros_like(pos)), dim=1).values
        span_w = torch.where(salient, first_word, torch.full_like(first_word, -1))
        return torch.gather(torch.cat([span_w, span_w.new_full((B, 1), -1)], 1), 1, slot)
