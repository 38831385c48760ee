"""Token labels for direct supervision of a masking policy: which tokens *should* be masked.

Every builder returns a ``datasets.Dataset`` with one row per sequence and the columns

- ``input_ids``    list[int]: the tokens, with the tokenizer's special tokens;
- ``word_ids``     list[int]: word index per token, -1 at special tokens;
- ``token_labels`` list[int]: 1 = should be masked, 0 = should not, 2 = should stay
  visible (``KEEP``: the subject of the questions, with ``mark_keys``; a negative wherever
  labels are read as positive/negative), -100 = ignored (special tokens, which no policy
  may mask anyway).

Builders:
- ``answer_span_labels``: cloze tasks; the gold answer spans of one split are the positives;
- ``importance_labels`` (from ``selective.py``): classification tasks; Train No Evil's
  buffer rule on examples a fine-tuned classifier gets right.

``padded_labels`` turns such a dataset into padded tensors once, so that training loops and
metrics index batches out of them instead of collating row by row.
"""
from __future__ import annotations

import datasets
import torch

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.tasks.base import Passage, Span, Task
from maskpolicy.tasks.features import encode_passages
from maskpolicy.tasks.text import find_whole_word

from .selective import importance_labels  # noqa: F401  (re-exported: the classification builder)

IGNORE = -100
"""Label of tokens that count neither as positive nor as negative (special tokens)."""
KEEP = 2
"""Label of tokens that must stay visible: the passage's key (the subject the questions name)."""

LABEL_COLUMNS = ("input_ids", "word_ids", "token_labels")
SPLITS = ("train", "eval")


def answer_span_labels(task: Task, tokenizer, max_length: int = 64, split: str = "train",
                       mark_keys: bool = False) -> datasets.Dataset:
    """Corpus passages holding answer spans of ``split``; positives = the tokens of those spans.

    ``split="train"`` is the supervision signal (training entities only); ``split="eval"``
    gives the held-out set (evaluation entities' passages) used to report P/R/F1. Spans of
    the other split are never looked at, so eval answers cannot leak into training.
    ``mark_keys``: the tokens of the passage's ``key`` where it occurs in the text (whole
    words, case-sensitive; the subject of the questions) get ``KEEP`` instead of 0.
    Extra column ``key`` (passage key) is kept for pairing and debugging.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    passages = [p for p in task.corpus if any(s.split == split for s in p.spans)]
    if not passages:
        raise DataError(
            f"task {task.name} has no answer spans for --method supervised (split {split!r}): "
            f"no supervision signal; a {task.kind} task needs gold spans in its corpus passages "
            "(cloze tasks) or labelled examples (classification tasks)"
        )
    # span_splits=(split,) hides the other split's spans: their tokens become negatives.
    enc = encode_passages(tokenizer, passages, max_length=max_length, span_splits=(split,))
    keys = [[-1] * len(row) for row in enc["input_ids"]]
    if mark_keys:
        keyed = [Passage(p.text, [Span(a, b) for a, b in find_whole_word(p.text, p.key)] if p.key else [], p.key)
                 for p in passages]
        keys = encode_passages(tokenizer, keyed, max_length=max_length, span_splits=("train",))["span_ids"]
    labels = [
        [IGNORE if w < 0 else 1 if s >= 0 else KEEP if k >= 0 else 0 for w, s, k in zip(words, spans, key)]
        for words, spans, key in zip(enc["word_ids"], enc["span_ids"], keys)
    ]
    if not any(1 in row for row in labels):
        raise DataError(f"task {task.name}: every {split!r} answer span was truncated away "
                        f"at max_length={max_length}; raise max_length")
    # span_ids is dropped on purpose: a policy evaluated on these rows must not see the gold spans.
    return enc.remove_columns(["span_ids"]).add_column("token_labels", labels)


def check_label_dataset(data, what: str = "label dataset") -> None:
    """DataError unless ``data`` has the label columns with one entry per token."""
    names = getattr(data, "column_names", None)
    if names is None or any(c not in names for c in LABEL_COLUMNS):
        raise DataError(f"{what} must be a datasets.Dataset with columns {', '.join(LABEL_COLUMNS)}; "
                        f"got {names if names is not None else type(data).__name__}")
    if len(data) == 0:
        raise DataError(f"{what} is empty")


def padded_labels(data: datasets.Dataset, pad_id: int) -> dict[str, torch.Tensor]:
    """All rows right-padded to the longest one: ``input_ids``, ``attention_mask``,
    ``word_ids`` (-1 at padding), ``token_labels`` (-100 at padding), each [N, T] long."""
    check_label_dataset(data)
    cols = data.select_columns(list(LABEL_COLUMNS)).to_dict()
    lengths = [len(r) for r in cols["input_ids"]]
    for name in ("word_ids", "token_labels"):
        if [len(r) for r in cols[name]] != lengths:
            raise DataError(f"'{name}' must have one entry per token, like 'input_ids'")
    N, T = len(lengths), max(lengths)
    out = {
        "input_ids": torch.full((N, T), int(pad_id), dtype=torch.long),
        "attention_mask": torch.zeros(N, T, dtype=torch.long),
        "word_ids": torch.full((N, T), -1, dtype=torch.long),
        "token_labels": torch.full((N, T), IGNORE, dtype=torch.long),
    }
    for i, n in enumerate(lengths):
        out["input_ids"][i, :n] = torch.tensor(cols["input_ids"][i])
        out["attention_mask"][i, :n] = 1
        out["word_ids"][i, :n] = torch.tensor(cols["word_ids"][i])
        out["token_labels"][i, :n] = torch.tensor(cols["token_labels"][i])
    return out


def batch_slice(tensors: dict[str, torch.Tensor], index: torch.Tensor, device=None) -> dict[str, torch.Tensor]:
    """Rows ``index`` of padded tensors, trimmed to the longest selected row ([b, t])."""
    rows = {k: v[index] for k, v in tensors.items()}
    t = max(int(rows["attention_mask"].sum(1).max()), 1)  # right padding: real tokens come first
    return {k: v[:, :t].to(device) if device is not None else v[:, :t] for k, v in rows.items()}
