"""PMI n-gram tables for PMI-Masking (Levine et al., ICLR 2021).

A table holds the word n-grams (2..max_n words) of a corpus that are strong collocations,
keyed by the token ids of the whole n-gram, with their score:

    n = 2:  PMI(w1 w2)   = log p(w1 w2) - log p(w1) - log p(w2)
    n >= 3: score(w1..n) = log p(w1..n) - max over binary splits [log p(left) + log p(right)]

Levine et al.'s measure for n >= 3 is the minimum, over all segmentations of the n-gram,
of log p(ngram) / prod p(segments); this one takes the minimum over binary splits only
(cheaper, and still low for an n-gram that is merely a collocation plus an unrelated
word: "in new york" scores like "in" + "new york", not like "new york").
Probabilities are counts divided by the number of word positions in the corpus.

Tables are tied to a tokenizer by the vocabulary fingerprint (``VocabInfo.fingerprint``).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field

from .atomic import write_text_atomic
from .errors import ArtifactError, ConfigError
from .paths import read_text
from .vocab import VocabInfo

FORMAT = "maskpolicy-pmi-table/1"
BUILD_HINT = "build one with `maskpolicy pmi --task T --out FILE` (training builds one from the task corpus)"
_REQUIRED = ("format", "ngrams", "max_n", "min_count", "fingerprint", "num_passages")


@dataclass
class PmiTable:
    ngrams: dict[tuple[int, ...], float]  # token ids of the whole n-gram -> score
    max_n: int
    min_count: int
    fingerprint: str  # VocabInfo.fingerprint of the tokenizer it was built with
    num_passages: int
    top_k: int | None = None
    extra: dict = field(default_factory=dict)  # free-form provenance (task name, ...)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (``atomic.write_text_atomic``: with the umask's mode)."""
        path = os.fspath(path)
        data = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "max_n": self.max_n,
            "min_count": self.min_count,
            "top_k": self.top_k,
            "num_passages": self.num_passages,
            "extra": self.extra,
            # JSON keys must be strings: a list of [token ids, score] sorted by score.
            "ngrams": [[list(k), v] for k, v in sorted(self.ngrams.items(), key=lambda kv: -kv[1])],
        }
        write_text_atomic(path, json.dumps(data))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PmiTable":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ArtifactError(f"PMI table {path!r} not found; {BUILD_HINT}")
        text = read_text(path, fix=f"rebuild it: {BUILD_HINT}", error=ArtifactError)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArtifactError(f"PMI table {path!r} is corrupt (not valid JSON: {e}); rebuild it") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"PMI table {path!r} is corrupt (expected a JSON object); rebuild it")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ArtifactError(f"PMI table {path!r} lacks {', '.join(missing)}; rebuild it")
        if data["format"] != FORMAT:
            raise ArtifactError(f"PMI table {path!r} has format {data['format']!r}, expected {FORMAT!r}")
        try:
            ngrams = {tuple(int(i) for i in ids): float(score) for ids, score in data["ngrams"]}
            return cls(
                ngrams=ngrams, max_n=int(data["max_n"]), min_count=int(data["min_count"]),
                fingerprint=str(data["fingerprint"]), num_passages=int(data["num_passages"]),
                top_k=None if data.get("top_k") is None else int(data["top_k"]), extra=dict(data.get("extra") or {}),
            )
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"PMI table {path!r} has malformed entries ({e}); rebuild it") from e

    def check_vocab(self, vocab: VocabInfo, where: str = "PMI table") -> None:
        if self.fingerprint != vocab.fingerprint:
            raise ConfigError(
                f"{where} was built with another tokenizer (vocab fingerprint {self.fingerprint}, "
                f"this tokenizer {vocab.fingerprint}); rebuild it for this tokenizer"
            )


def _surface(vocab: VocabInfo, tok: int) -> str:
    """Token text without "##" / "Ġ" / "▁" markers ("Ġ" itself counts as a letter)."""
    text = vocab.tokens[tok] if 0 <= tok < len(vocab.tokens) else ""
    return text[2:] if text.startswith("##") else text.lstrip("Ġ▁")


def _passage_words(ids: list[int], wids: list[int], special: set[int], vocab: VocabInfo) -> list[tuple[int, ...] | None]:
    """Words of one passage as token-id tuples, in order; None = barrier (special token,
    punctuation-only word) that no n-gram may cross."""
    words: list[tuple[int, ...] | None] = []
    cur: list[int] = []
    cur_w = None
    for tok, w in zip(ids, wids):
        if w is None or w < 0 or tok in special:
            if cur:
                words.append(tuple(cur))
            cur, cur_w = [], None
            words.append(None)
            continue
        if w != cur_w and cur:
            words.append(tuple(cur))
            cur = []
        cur.append(tok)
        cur_w = w
    if cur:
        words.append(tuple(cur))
    out = []
    for word in words:
        # Punctuation-only: no alphanumeric character in any of its tokens.
        if word is not None and not any(ch.isalnum() for t in word for ch in _surface(vocab, t)):
            word = None
        out.append(word)
    return out


def build_pmi_table(
    token_ids: list[list[int]],
    word_ids: list[list[int]],
    vocab: VocabInfo,
    *,
    max_n: int = 3,
    min_count: int = 5,
    top_k: int = 10000,
) -> PmiTable:
    """Score word n-grams (2..max_n words) of a tokenized corpus; keep the top_k with count
    >= min_count and a positive score. ``word_ids[i][j]`` is the word index of token j of passage i (-1 or None
    for special tokens), as ``tokenizer(...).word_ids()`` gives."""
    if max_n < 2:
        raise ConfigError(f"PMI table: max_n must be >= 2, got {max_n}")
    if min_count < 1 or top_k < 1:
        raise ConfigError(f"PMI table: min_count and top_k must be >= 1, got {min_count}, {top_k}")
    if len(token_ids) != len(word_ids):
        raise ConfigError("PMI table: token_ids and word_ids must have one entry per passage")
    special = set(int(i) for i in vocab.special_ids.tolist())
    counts: list[Counter] = [Counter() for _ in range(max_n + 1)]  # counts[n][tuple of n words]
    total = 0
    for ids, wids in zip(token_ids, word_ids):
        words = _passage_words(list(ids), list(wids), special, vocab)
        total += sum(w is not None for w in words)
        for i in range(len(words)):
            for n in range(1, max_n + 1):
                gram = tuple(words[i:i + n])
                if len(gram) < n or gram[-1] is None:
                    break  # a barrier ends every longer n-gram from i too
                counts[n][gram] += 1
    if total == 0:
        return PmiTable({}, max_n, min_count, vocab.fingerprint, len(token_ids), top_k)
    log_total = math.log(total)
    logp: dict[tuple, float] = {}

    def lp(gram: tuple) -> float:
        if gram not in logp:
            logp[gram] = math.log(counts[len(gram)][gram]) - log_total
        return logp[gram]

    scored: dict[tuple[int, ...], float] = {}
    for n in range(2, max_n + 1):
        for gram, c in counts[n].items():
            if c < min_count:
                continue
            # n = 2 is plain PMI; longer n-grams against their best binary split.
            best_split = max(lp(gram[:k]) + lp(gram[k:]) for k in range(1, n))
            score = lp(gram) - best_split
            if score <= 0:
                continue  # not a collocation: the words co-occur no more than by chance
            key = tuple(t for word in gram for t in word)
            scored[key] = max(score, scored.get(key, -math.inf))
    top = sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    return PmiTable(dict(top), max_n, min_count, vocab.fingerprint, len(token_ids), top_k)
