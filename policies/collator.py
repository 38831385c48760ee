"""``MaskingCollator``: a drop-in for ``transformers.DataCollatorForLanguageModeling``.

Same constructor names (``mlm``, ``mlm_probability``, ``mask_replace_prob``,
``random_replace_prob``, ``pad_to_multiple_of``, ``whole_word_mask``, ``seed``,
``return_tensors``), same output keys (``input_ids``, ``attention_mask``, ``token_type_ids``
when given, ``labels`` with -100 where not masked), usable as ``data_collator=`` in a
``Trainer`` or as ``collate_fn=`` in any ``DataLoader``. What it adds: any masking policy,
an exact per-sequence budget (``fill``: ``"none"``, the default, masks only the tokens a
policy selects, which for ``random`` and the other uniform heuristics is the whole budget;
``"ranking"``/``"random"`` fill it, see ``sampler.py``), and policy extras (``word_ids``,
``span_ids``) carried through padding and consumed by the policy (never handed to the model).

Padding is done here with plain tensor copies rather than ``tokenizer.pad`` (which walks
every feature in Python and dominates the cost of the HF collator).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .base import MaskingPolicy
from .errors import ConfigError, DataError
from .masker import MODEL_KEYS, Masker, MaskingConfig
from .registry import get_policy

# Padding value per known key; unknown integer keys (policy extras) are padded with -1.
_PAD_VALUES = {"labels": -100, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1, "position_ids": 0}
_DROPPED = {"label", "key", "text"}  # per-token "labels" are padded with -100


class MaskingCollator:
    def __init__(
        self,
        tokenizer,
        policy: str | MaskingPolicy = "random",
        *,
        mlm: bool = True,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        whole_word_mask: bool = False,
        deterministic: bool = False,
        fill: str = "none",
        seed: int | None = None,
        return_tensors: str = "pt",
        policy_options: dict | None = None,
    ) -> None:
        if return_tensors != "pt":
            raise ConfigError(f"MaskingCollator returns torch tensors only (return_tensors='pt'), got {return_tensors!r}")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ConfigError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
        if tokenizer is None or tokenizer.pad_token_id is None:
            raise ConfigError("MaskingCollator needs a tokenizer with a pad token")
        self.tokenizer = tokenizer
        self.mlm = mlm
        self.pad_to_multiple_of = pad_to_multiple_of
        self.return_tensors = return_tensors
        self.pad_id = int(tokenizer.pad_token_id)
        self.left_pad = getattr(tokenizer, "padding_side", "right") == "left"
        if whole_word_mask and policy == "random":
            policy = "whole_word"  # HF's whole_word_mask flag, expressed as a policy
        self.policy = get_policy(policy, tokenizer, **(policy_options or {}))
        self.config = MaskingConfig(
            rate=mlm_probability,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            deterministic=deterministic,
            fill=fill,
        )
        self.masker = Masker(self.policy, self.config)
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_worker: int | None = None

    # ---- padding ---------------------------------------------------------------------
    def pad(self, features: Sequence) -> dict[str, torch.Tensor]:
        """Pad a list of examples (dicts of token lists/tensors, or bare id lists) to [B, T]."""
        if len(features) == 0:
            raise DataError("cannot collate an empty list of examples")
        if not isinstance(features[0], Mapping):
            features = [{"input_ids": f} for f in features]
        if "input_ids" not in features[0]:
            raise DataError(f"examples must have 'input_ids'; got keys {sorted(features[0])}")
        rows = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
        lengths = [len(r) for r in rows]
        if min(lengths) == 0:
            raise DataError("an example has no tokens (empty input_ids)")
        T = max(lengths)
        if self.pad_to_multiple_of:
            T = -(-T // self.pad_to_multiple_of) * self.pad_to_multiple_of
        out = {"input_ids": self._stack(rows, lengths, T, self.pad_id)}
        attention = [torch.ones(n, dtype=torch.long) for n in lengths]
        out["attention_mask"] = self._stack(attention, lengths, T, 0)
        for key, value in features[0].items():
            if key in _DROPPED or key in ("input_ids", "attention_mask") or not _is_token_list(value):
                continue
            vals = [torch.as_tensor(f[key], dtype=torch.long) for f in features]
            if [len(v) for v in vals] != lengths:
                raise DataError(f"'{key}' must have one entry per token, like 'input_ids'")
            out[key] = self._stack(vals, lengths, T, _PAD_VALUES.get(key, -1))
        if "attention_mask" in features[0]:
            given = [torch.as_tensor(f["attention_mask"], dtype=torch.long) for f in features]
            out["attention_mask"] = self._stack(given, lengths, T, 0)
        return out

    def _stack(self, rows: list[torch.Tensor], lengths: list[int], T: int, value: int) -> torch.Tensor:
        out = torch.full((len(rows), T), value, dtype=torch.long)
        for i, (r, n) in enumerate(zip(rows, lengths)):
            if self.left_pad:
                out[i, T - n :] = r
            else:
                out[i, :n] = r
        return out

    # ---- masking ---------------------------------------------------------------------
    @property
    def generator(self) -> torch.Generator | None:
        """Seeded generator; each DataLoader worker gets its own stream (seed + worker id)."""
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else -1
        if self._generator is None or self._generator_worker != worker:
            self._generator = torch.Generator().manual_seed(self.seed + worker + 1)
            self._generator_worker = worker
        return self._generator

    def __call__(self, features: Sequence, return_tensors: str | None = None) -> dict[str, torch.Tensor]:
        batch = self.pad(features)
        if not self.mlm:  # causal LM convention of the HF collator: labels = inputs, -100 at padding
            out = {k: v for k, v in batch.items() if k in MODEL_KEYS}
            out["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            return out
        return self.masker(batch, generator=self.generator)

    def __repr__(self) -> str:
        return f"MaskingCollator(policy={self.policy!r}, config={self.config})"


def _is_token_list(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 1 and not value.is_floating_point()
    return isinstance(value, (list, tuple)) and (len(value) == 0 or isinstance(value[0], int))
