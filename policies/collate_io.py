"""Examples in, padded tensors out: the input and output side of ``MaskingCollator``.

Examples are dicts (or ``BatchEncoding``s) of lists, numpy arrays or torch tensors, or bare
id sequences. Every key is sorted by its shape across the batch, the way
``tokenizer.pad`` + ``DataCollatorForLanguageModeling`` treat them:

- per-token: one entry per token of ``input_ids`` (trailing dims allowed, e.g.
  ``offset_mapping`` [n, 2]): padded to [B, T, ...] on the tokenizer's padding side;
- per-example: scalars such as ``next_sentence_label``, or arrays of one shape in every
  example: stacked to [B, ...] and passed through to the model;
- text: strings or None: kept as a list (torch has no string tensors).

Padding is plain tensor copies rather than ``tokenizer.pad`` (which walks every feature in
Python and dominates the cost of the HF collator).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ConfigError, DataError

FORMATS = ("pt", "np")
# Keys that must have one entry per token, with the value that pads them. ``input_ids`` is
# padded with the tokenizer's pad id and ``token_type_ids`` with its pad_token_type_id.
PAD_VALUES = {"labels": -100, "attention_mask": 0, "special_tokens_mask": 1, "position_ids": 0, "offset_mapping": 0}
TOKEN_KEYS = {"input_ids", "token_type_ids", "word_ids", "span_ids", *PAD_VALUES}
_EXTRA_PAD = -1  # unknown integer per-token keys (policy extras: -1 = "no word/span")


@dataclass
class Padding:
    pad_id: int | None  # None: the tokenizer has no pad token (fine while no row needs padding)
    token_type_pad: int = 0
    left: bool = False
    multiple: int | None = None


@dataclass
class Collated:
    tokens: dict[str, torch.Tensor]  # per-token keys, [B, T, ...]; always input_ids and attention_mask
    examples: dict[str, list] = field(default_factory=dict)  # per-example values, one per example
    texts: dict[str, list] = field(default_factory=dict)  # strings / None, one per example
    bare: bool = False  # the examples were bare id sequences, not dicts


class WorkerGenerators:
    """One seeded ``torch.Generator`` per DataLoader worker: worker k draws from seed + k + 1,
    the main process from seed, so workers never share a stream. None without a seed."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._worker: int | None = None

    def current(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else -1
        if self._generator is None or self._worker != worker:
            self._generator, self._worker = torch.Generator().manual_seed(self.seed + worker + 1), worker
        return self._generator


def check_format(return_tensors: str) -> str:
    if return_tensors not in FORMATS:
        raise ConfigError(f"return_tensors must be 'pt' or 'np' (TensorFlow is not supported), got {return_tensors!r}")
    return return_tensors


def collate(features: Sequence, padding: Padding, skip: tuple[str, ...] = ()) -> Collated:
    """Sort and pad the keys of a list of examples (see module doc); ``skip`` keys are ignored."""
    if len(features) == 0:
        raise DataError("cannot collate an empty list of examples")
    bare = not isinstance(features[0], Mapping)
    if bare:
        features = [{"input_ids": f} for f in features]
    if "input_ids" not in features[0]:
        raise DataError(f"examples must have 'input_ids'; got keys {sorted(features[0])}")
    ids = [_tensor(f["input_ids"], "input_ids") for f in features]
    if any(r is None or r.dim() != 1 for r in ids):
        raise DataError("each example's input_ids must be a flat sequence of token ids")
    lengths = [len(r) for r in ids]
    T = max(lengths)
    if padding.multiple and T % padding.multiple:
        T += padding.multiple - T % padding.multiple
    if padding.pad_id is None and any(n < T for n in lengths):
        raise ConfigError("this batch needs padding but the tokenizer has no pad token; set tokenizer.pad_token")
    out = Collated({"input_ids": _pad(ids, T, padding.pad_id or 0, padding.left)}, bare=bare)
    out.tokens["attention_mask"] = _pad([torch.ones(n, dtype=torch.long) for n in lengths], T, 0, padding.left)
    for key in features[0]:
        if key == "input_ids" or key in skip:
            continue
        values = [_value(f, key) for f in features]
        rows = [_tensor(v, key) for v in values]
        if any(r is None for r in rows):
            out.texts[key] = values
        elif key in TOKEN_KEYS or all(r.dim() >= 1 and len(r) == n for r, n in zip(rows, lengths)):
            if [len(r) if r.dim() else -1 for r in rows] != lengths:
                raise DataError(f"'{key}' must have one entry per token, like 'input_ids'")
            value = padding.token_type_pad if key == "token_type_ids" else PAD_VALUES.get(key, _EXTRA_PAD)
            out.tokens[key] = _pad(rows, T, value, padding.left)
        else:
            out.examples[key] = values
    return out


def stack_examples(key: str, values: list, return_tensors: str):
    """[B, ...] tensor / array of per-example values, with the dtypes ``tokenizer.pad`` gives."""
    try:
        if return_tensors == "np":
            return np.stack([v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values])
        if isinstance(values[0], torch.Tensor):
            return torch.stack([torch.as_tensor(v) for v in values])
        if isinstance(values[0], (np.ndarray, np.generic)):
            return torch.from_numpy(np.stack([np.asarray(v) for v in values]))
        return torch.tensor(values)  # Python scalars: int64 / float32 / bool, as torch.tensor gives
    except (ValueError, TypeError, RuntimeError) as err:
        raise DataError(f"'{key}' has values of different shapes across the batch and cannot be stacked") from err


def word_ids_from_offsets(offsets: torch.Tensor, maskable: torch.Tensor) -> torch.Tensor:
    """[B, T] long word index (-1 where not maskable) from character offsets [B, T, 2].

    The Hugging Face whole-word rule: a maskable token starts a new word when its start is
    not the previous token's end (a gap in the text) or the previous token is not maskable;
    so "Paris" + "." written without a space is one word, as in DataCollatorForLanguageModeling.
    """
    start, end = offsets[..., 0], offsets[..., 1]  # [B, T] each
    prev_end = torch.full_like(end, -1)
    prev_end[:, 1:] = end[:, :-1]
    prev_ok = torch.zeros_like(maskable)
    prev_ok[:, 1:] = maskable[:, :-1]
    starts = maskable & ((start != prev_end) | ~prev_ok)
    ids = torch.cumsum(starts.long(), dim=1) - 1
    return torch.where(maskable, ids, torch.full_like(ids, -1))


def _value(feature: Mapping, key: str):
    if key not in feature:
        raise DataError(f"every example needs the same keys: '{key}' is missing from one")
    return feature[key]


def _tensor(value, key: str) -> torch.Tensor | None:
    """A numeric tensor (ints -> long, bools -> long, floats kept) or None for text / None."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            arr = np.asarray(value)
        except ValueError as err:  # ragged nesting
            raise DataError(f"'{key}' is ragged inside one example") from err
        if arr.dtype.kind not in "biuf":
            return None
        t = torch.from_numpy(arr)
    if t.numel() == 0 or not t.is_floating_point():  # ints and bools; numpy makes [] float64
        return t.long()
    return t


def _pad(rows: list[torch.Tensor], T: int, value: float, left: bool) -> torch.Tensor:
    """[B, T, ...]: rows ([n_i, ...]) copied to the right (or left) end, ``value`` elsewhere."""
    dtype = torch.float32 if any(r.is_floating_point() for r in rows) else torch.long
    trailing = next((r.shape[1:] for r in rows if r.numel()), rows[0].shape[1:])
    out = torch.full((len(rows), T, *trailing), value, dtype=dtype)
    for i, r in enumerate(rows):
        n = len(r)
        if n and left:
            out[i, T - n :] = r
        elif n:
            out[i, :n] = r
    return out
