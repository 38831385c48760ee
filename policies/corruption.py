"""BERT's corruption of the selected positions: [MASK] / random token / unchanged.

Defaults are BERT's 80/10/10 and the parameter names are those of
``transformers.DataCollatorForLanguageModeling`` (``mask_replace_prob``,
``random_replace_prob``), so configs carry over.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass
class CorruptionConfig:
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

    def __post_init__(self) -> None:
        for name in ("mask_replace_prob", "random_replace_prob"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v!r}")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ConfigError(
                "mask_replace_prob + random_replace_prob must be <= 1, got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}"
            )


def replacement_candidates(vocab_size: int, special_ids: torch.Tensor) -> torch.Tensor:
    """[V'] long: token ids a masked position may be replaced with (never a special token)."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[special_ids[special_ids < vocab_size]] = False
    return torch.nonzero(keep).squeeze(1)


def corrupt(
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    mask_id: int,
    candidates: torch.Tensor,
    config: CorruptionConfig = CorruptionConfig(),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (corrupted input_ids [B, T], labels [B, T]: original id where masked, else -100)."""
    device = input_ids.device
    gen_device = device if generator is None else generator.device
    labels = torch.where(mask, input_ids, torch.full_like(input_ids, -100))
    # One uniform draw per position decides the fate of the masked ones.
    u = torch.rand(input_ids.shape, generator=generator, device=gen_device).to(device)
    to_mask = mask & (u < config.mask_replace_prob)
    to_random = mask & (u >= config.mask_replace_prob) & (u < config.mask_replace_prob + config.random_replace_prob)
    out = input_ids.masked_fill(to_mask, mask_id)
    if to_random.any():
        pick = torch.randint(len(candidates), input_ids.shape, generator=generator, device=gen_device).to(device)
        out = torch.where(to_random, candidates.to(device)[pick], out)
    return out, labels
