"""Tasks as tokenised ``datasets.Dataset``s, ready for the collators (no padding here).

- ``encode_passages``: the intermediate corpus. Columns ``input_ids`` (with [CLS]/[SEP]),
  ``word_ids`` (word index per token, -1 at special tokens: whole-word masking),
  ``span_ids`` (index of the gold span a token overlaps, -1 outside: span policies and the
  ``salient_span`` oracle), ``key`` (passage key, "" when none). All lists have one entry
  per token.
- ``encode_cloze``: questions with the blank shown as one mask token per answer token;
  ``labels`` hold the answer ids under the masks and -100 elsewhere.
- ``encode_labeled``: classification examples: ``input_ids``, ``labels`` (int).
- ``cloze_exact_match``: [B] bool from predictions and cloze labels.

Over-long texts are truncated to ``max_length`` tokens and one ``UserWarning`` says how
many were; a cloze question whose blank would be cut off is an error instead.
"""
from __future__ import annotations

import warnings

import datasets
import torch

from maskpolicy.policies.errors import DataError

from .base import BLANK, ClozeQuestion, LabeledText, Passage


def _warn_truncated(count: int, total: int, max_length: int, what: str) -> None:
    if count:
        warnings.warn(f"{count} of {total} {what} longer than max_length={max_length} tokens were truncated",
                      UserWarning, stacklevel=3)


def _lengths(tokenizer, texts: list[str]) -> list[int]:
    """Untruncated token counts (with special tokens), batched."""
    enc = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
    return [len(ids) for ids in enc["input_ids"]]


def encode_passages(tokenizer, passages: list[Passage], max_length: int = 128,
                    span_splits: tuple[str, ...] = ("train", "eval")) -> datasets.Dataset:
    """Tokenise the corpus; spans whose ``split`` is not in ``span_splits`` are ignored
    (``span_splits=()`` gives all -1, e.g. when eval spans must stay hidden)."""
    if not passages:
        raise DataError("the corpus is empty: no passages to encode")
    texts = [p.text for p in passages]
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    _warn_truncated(sum(n > max_length for n in _lengths(tokenizer, texts)), len(texts), max_length, "passages")
    word_ids, span_ids = [], []
    for i, passage in enumerate(passages):
        words = enc.word_ids(i)
        word_ids.append([-1 if w is None else w for w in words])
        spans = [s for s in passage.spans if s.split in span_splits]
        row = [-1] * len(words)
        if spans:
            for j, (start, end) in enumerate(enc["offset_mapping"][i]):
                if words[j] is None:
                    continue
                for k, s in enumerate(spans):
                    if start < s.end and end > s.start:  # the token overlaps the span's characters
                        row[j] = k
                        break
        span_ids.append(row)
    return datasets.Dataset.from_dict({
        "input_ids": enc["input_ids"],
        "word_ids": word_ids,
        "span_ids": span_ids,
        "key": [p.key or "" for p in passages],
    })


def encode_cloze(tokenizer, questions: list[ClozeQuestion], max_length: int = 128) -> datasets.Dataset:
    """Columns ``input_ids`` [T] and ``labels`` [T] (answer ids under the masks), ``key``.

    The blank becomes ``len(tokenizer(answers[0]))`` mask tokens, so the model is told the
    answer's length but nothing else. Questions longer than ``max_length`` are cut at the
    end (with a warning); when that would cut the blank, the question is cut to a window of
    ``max_length`` tokens centred on the blank instead (long SQuAD contexts ask about any
    sentence of a paragraph).
    """
    if not questions:
        raise DataError("no cloze questions to encode")
    mask = tokenizer.mask_token
    if mask is None:
        raise DataError("the tokenizer has no mask token; cloze questions need one")
    for q in questions:
        if q.text.count(BLANK) != 1 or not q.answers:
            raise DataError(f"cloze question must contain {BLANK} exactly once and have an answer: {q.text!r}")
    answers = tokenizer([q.answers[0] for q in questions], add_special_tokens=False)["input_ids"]
    for q, answer in zip(questions, answers):
        if not answer:
            raise DataError(f"answer {q.answers[0]!r} of question {q.text!r} has no tokens")

    def shown_text(q, answer) -> str:
        # The mask token's text is matched as one special token by HF fast tokenizers.
        return q.text.replace(BLANK, " " + " ".join([mask] * len(answer)) + " ")

    shown = [shown_text(q, answer) for q, answer in zip(questions, answers)]
    enc = tokenizer(shown, truncation=True, max_length=max_length)
    input_ids, labels, truncated = [], [], 0
    for q, answer, ids, full_length in zip(questions, answers, enc["input_ids"], _lengths(tokenizer, shown)):
        positions = [j for j, t in enumerate(ids) if t == tokenizer.mask_token_id]
        if full_length > max_length:
            truncated += 1
        if full_length > max_length and len(positions) < len(answer):
            ids = _window_around_masks(tokenizer, q.text, shown_text(q, answer), len(answer), max_length)
            positions = [j for j, t in enumerate(ids) if t == tokenizer.mask_token_id]
        if len(positions) != len(answer) or positions != list(range(positions[0], positions[0] + len(answer))):
            raise DataError(f"question text already holds the mask token {mask}: {q.text!r}")
        row = [-100] * len(ids)
        row[positions[0]: positions[0] + len(answer)] = answer
        input_ids.append(ids)
        labels.append(row)
    _warn_truncated(truncated, len(questions), max_length, "cloze questions")
    return datasets.Dataset.from_dict({"input_ids": input_ids, "labels": labels,
                                       "key": [q.key or "" for q in questions]})


def _window_around_masks(tokenizer, question: str, text: str, n_masks: int, max_length: int) -> list[int]:
    """[CLS] + the ``max_length - 2`` tokens of ``text`` centred on its masks + [SEP]."""
    room = max_length - 2
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    at = [j for j, t in enumerate(ids) if t == tokenizer.mask_token_id]
    if len(at) != n_masks or n_masks > room:
        raise DataError(f"cloze question {question[:80]!r}: its answer does not fit in max_length={max_length} "
                        "tokens; raise max_length")
    start = max(0, min(at[0] - (room - n_masks) // 2, len(ids) - room))
    return [tokenizer.cls_token_id] + ids[start: start + room] + [tokenizer.sep_token_id]


def encode_labeled(tokenizer, examples: list[LabeledText], max_length: int = 128) -> datasets.Dataset:
    """Columns ``input_ids`` [T] (truncated to ``max_length``) and ``labels`` (int)."""
    if not examples:
        raise DataError("no labelled examples to encode")
    texts = [ex.text for ex in examples]
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    _warn_truncated(sum(n > max_length for n in _lengths(tokenizer, texts)), len(texts), max_length, "examples")
    return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "labels": [int(ex.label) for ex in examples]})


def cloze_exact_match(pred_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] bool from ``pred_ids`` and ``labels`` [B, T]: every labelled position (label !=
    -100) predicted exactly; a row without labelled positions counts as wrong."""
    labelled = labels != -100
    wrong = labelled & (pred_ids != labels)
    return labelled.any(dim=1) & ~wrong.any(dim=1)
