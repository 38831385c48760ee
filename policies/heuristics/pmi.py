"""``pmi``: PMI-Masking (Levine et al., ICLR 2021).

High-PMI word n-grams (collocations such as "new york") from a ``PmiTable`` are masked
whole; every other word is its own unit; units are chosen uniformly (all scores 1), so a
collocation is masked exactly when the sampler picks it, never half of it.
"""
from __future__ import annotations

import os

import torch

from ..base import MaskingPolicy, merge_units
from ..errors import ConfigError
from ..pmi_table import BUILD_HINT, PmiTable
from ..registry import register_policy


@register_policy("pmi")
class PmiPolicy(MaskingPolicy):
    def __init__(self, tokenizer=None, *, vocab=None, table: str | PmiTable | None = None) -> None:
        super().__init__(tokenizer, vocab=vocab)
        if table is None:
            raise ConfigError(f"policy 'pmi' needs a PMI n-gram table (option table=PATH); {BUILD_HINT}")
        if isinstance(table, PmiTable):
            pmi, self.table = table, "<in-memory>"  # config() records a name, never the table
        elif isinstance(table, (str, os.PathLike)):
            pmi, self.table = PmiTable.load(table), os.fspath(table)
        else:
            raise ConfigError(f"policy 'pmi': table must be a path or a PmiTable, got {type(table).__name__}")
        pmi.check_vocab(self.vocab, where=f"PMI table {self.table!r}")
        self.pmi_table = pmi
        # First token id -> the n-gram lengths (in tokens) starting with it, so matching is a
        # few dict look-ups per word start instead of a scan over candidates.
        lengths: dict[int, set[int]] = {}
        for key in pmi.ngrams:
            if key:
                lengths.setdefault(key[0], set()).add(len(key))
        self._lengths = {tok: sorted(ls) for tok, ls in lengths.items()}

    def scores(self, input_ids: torch.Tensor, maskable: torch.Tensor, **extras) -> torch.Tensor:
        return maskable.float()

    def units(self, input_ids, attention_mask=None, *, generator=None, **extras):
        maskable = self.maskable(input_ids, attention_mask, extras.get("special_tokens_mask"))
        words = self.word_ids(input_ids, maskable, extras.get("word_ids"))  # [B, T]
        groups = self.ngram_groups(input_ids, words)
        return merge_units(words, groups)

    def ngram_groups(self, input_ids: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """[B, T] long: start position of the table n-gram covering each token, -1 elsewhere.

        Occurrences must start at a word start and end at a word end. Overlaps are resolved
        per row by preferring longer n-grams (in words), then higher score, then the
        leftmost, which is a Python loop over rows (the only one in the heuristics)."""
        B, T = input_ids.shape
        groups = [[-1] * T for _ in range(B)]
        if not self._lengths:
            return torch.tensor(groups, dtype=torch.long, device=input_ids.device).view(B, T)
        ngrams = self.pmi_table.ngrams
        ids_rows = input_ids.tolist()
        word_rows = words.tolist()
        for b in range(B):
            row, w = ids_rows[b], word_rows[b]
            found = []  # (-n_words, -score, start, end)
            for s in range(T):
                if w[s] < 0 or (s > 0 and w[s - 1] == w[s]):
                    continue  # not a word start
                for n in self._lengths.get(row[s], ()):
                    e = s + n
                    score = ngrams.get(tuple(row[s:e])) if e <= T else None
                    if score is None or min(w[s:e]) < 0:
                        continue
                    if e < T and w[e] == w[e - 1]:
                        continue  # ends inside a word
                    found.append((-len(set(w[s:e])), -score, s, e))
            g = groups[b]
            for _, _, s, e in sorted(found):
                if all(x < 0 for x in g[s:e]):  # no overlap with a better n-gram
                    g[s:e] = [s] * (e - s)
        return torch.tensor(groups, dtype=torch.long, device=input_ids.device).view(B, T)
