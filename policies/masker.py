"""Policy + sampler + corruption: one padded batch in, an MLM batch out.

``Masker`` is the single place where any policy turns into masked inputs and labels, so
the collator, the training loops and the benchmarks all mask the same way:

    probs = policy(input_ids, attention_mask, **extras)        # [B, T]
    units = policy.units(...)                                    # [B, T] or None
    mask  = sample_mask(probs, maskable, rate, units=units)      # [B, T] bool, exact budget
    input_ids, labels = corrupt(input_ids, mask, ...)            # 80/10/10, -100 elsewhere
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .base import MaskingPolicy
from .configs import config_from_dict
from .corruption import CorruptionConfig, corrupt, replacement_candidates
from .errors import ConfigError, MaskpolicyError
from .sampler import DEFAULT_FILL, check_fill, check_rate, sample_mask

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
"""Batch keys handed on to the model; every other key is a policy extra and is consumed."""


@dataclass
class MaskingConfig:
    rate: float = 0.15  # fraction of maskable tokens per sequence (exact budget)
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    deterministic: bool = False  # top-k of the probabilities instead of sampling
    fill_zero: bool = True  # fill the budget with zero-probability tokens when needed
    # What fills the budget beyond the tokens the policy selects (p >= select_threshold):
    # "none" (fewer masks), "ranking" (the policy's own tail) or "random" (uniform among the
    # rest); see sampler.py. None: the policy's own (a learned policy carries the fill its
    # downstream validation chose for its task), else ``sampler.DEFAULT_FILL``. No fill is
    # best everywhere: on the dense world the gold-span oracle scored 0.85 with "none" and
    # 0.57 with "ranking", on a world with questions phrased unlike the corpus 0.22 with
    # "none" and 0.70 with "random". Policies that give every token p = 1 (random,
    # whole_word, span) select everything, so the budget is exact for them whatever the mode.
    fill: str | None = None
    select_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_rate(self.rate)
        check_fill(DEFAULT_FILL if self.fill is None else self.fill, self.select_threshold)
        self.corruption  # validates the 80/10/10 split

    @property
    def corruption(self) -> CorruptionConfig:
        return CorruptionConfig(self.mask_replace_prob, self.random_replace_prob)

    @classmethod
    def from_dict(cls, data: dict) -> "MaskingConfig":
        return config_from_dict(cls, data, "masking")

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_fill(config: MaskingConfig, policy: MaskingPolicy) -> str:
    """The fill a run uses: the config's when it names one, else the policy's validated
    choice, else ``DEFAULT_FILL``."""
    if config.fill is not None:
        return config.fill
    chosen = getattr(policy, "fill", None)
    return chosen if chosen is not None else DEFAULT_FILL


class Masker:
    """Applies a policy to padded batches. Stateless apart from the policy's own weights."""

    def __init__(self, policy: MaskingPolicy, config: MaskingConfig | None = None, *,
                 allow_empty_rows: bool = False) -> None:
        """``allow_empty_rows``: a row with nothing maskable (only special tokens or padding)
        gets no mask and all -100 labels, as in the HF collator; by default it is refused,
        because in a training loop it usually means broken data."""
        if not isinstance(policy, MaskingPolicy):
            raise ConfigError(f"expected a MaskingPolicy, got {type(policy).__name__}")
        self.policy = policy
        self.config = config or MaskingConfig()
        self.fill = resolve_fill(self.config, policy)
        self.allow_empty_rows = allow_empty_rows
        self.candidates = replacement_candidates(policy.vocab.vocab_size, policy.vocab.special_ids)
        if self.config.random_replace_prob > 0 and self.candidates.numel() == 0:
            raise ConfigError("the vocabulary has no ordinary (non-special) token to use as a random replacement; "
                              "set random_replace_prob=0")

    @torch.no_grad()
    def select(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **extras,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [B, T] bool, probs [B, T] float) for a padded batch."""
        if input_ids.dim() != 2:
            raise MaskpolicyError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        extras = {k: v for k, v in extras.items() if isinstance(v, torch.Tensor)}
        maskable = self.policy.maskable(input_ids, attention_mask, extras.get("special_tokens_mask"))
        if not self.allow_empty_rows and not maskable.any(dim=1).all():
            bad = (~maskable.any(dim=1)).nonzero().flatten().tolist()
            raise MaskpolicyError(
                f"sequence(s) {bad[:5]} of the batch have no maskable token (only special tokens or padding)"
            )
        probs = self.policy(input_ids, attention_mask, **extras)
        units = self.policy.units(input_ids, attention_mask, generator=generator, **extras)
        mask = sample_mask(
            probs,
            maskable,
            self.config.rate,
            units=units,
            generator=generator,
            deterministic=self.config.deterministic,
            fill_zero=self.config.fill_zero,
            fill=self.fill,
            select_threshold=self.config.select_threshold,
        )
        return mask, probs

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """Padded tensors in (model keys + extras), model keys + ``labels`` out."""
        input_ids = batch["input_ids"]
        extras = {k: v for k, v in batch.items() if k not in MODEL_KEYS and k != "labels"}
        mask, _ = self.select(input_ids, batch.get("attention_mask"), generator, **extras)
        inputs, labels = corrupt(
            input_ids, mask, self.policy.vocab.mask_id, self.candidates, self.config.corruption, generator
        )
        out = {k: v for k, v in batch.items() if k in MODEL_KEYS}
        out["input_ids"] = inputs
        out["labels"] = labels
        return out
