"""The sampler's statistics and the policy layer's bad-input errors."""
from __future__ import annotations

import pytest
import torch

from maskpolicy.policies import ConfigError, Masker, MaskingConfig, MaskpolicyError, get_policy, mask_budget, sample_mask
from maskpolicy.policies.base import MaskingPolicy


def test_budget_rounds_half_up_and_is_at_least_one():
    maskable = torch.zeros(4, 40, dtype=torch.bool)
    for row, n in enumerate([0, 3, 10, 40]):
        maskable[row, :n] = True
    assert mask_budget(maskable, 0.15).tolist() == [0, 1, 2, 6]  # 0.45 -> 1 (at least one), 1.5 -> 2, 6.0


def test_gumbel_top_k_draws_in_proportion_to_probabilities():
    # One position to choose among 4 with weights 1:2:3:4 -> empirical frequencies match.
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).repeat(20000, 1)
    maskable = torch.ones_like(probs, dtype=torch.bool)
    mask = sample_mask(probs, maskable, 0.2, generator=torch.Generator().manual_seed(0))  # k = round(0.8) = 1
    freq = mask.float().mean(0)
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015)


def test_deterministic_takes_the_top_k():
    probs = torch.tensor([[0.9, 0.1, 0.5, 0.7, 0.2]])
    mask = sample_mask(probs, torch.ones_like(probs, dtype=torch.bool), 0.4, deterministic=True)
    assert mask.tolist() == [[True, False, False, True, False]]


def test_zero_probability_tokens_fill_the_budget_only_when_needed():
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    maskable = torch.ones_like(probs, dtype=torch.bool)
    mask = sample_mask(probs, maskable, 0.3, generator=torch.Generator().manual_seed(0))
    assert mask[0, 0] and int(mask.sum()) == 3
    strict = sample_mask(probs, maskable, 0.3, generator=torch.Generator().manual_seed(0), fill_zero=False)
    assert strict.tolist()[0] == [True] + [False] * 9


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_rate_outside_open_interval_is_refused(rate):
    with pytest.raises(ConfigError, match="mask rate"):
        MaskingConfig(rate=rate)


class _BrokenPolicy(MaskingPolicy):
    def scores(self, input_ids, maskable, **extras):
        return torch.full(input_ids.shape, float("nan"))


def test_nan_probabilities_are_refused(tokenizer, batch):
    masker = Masker(_BrokenPolicy(tokenizer))
    with pytest.raises(MaskpolicyError, match="NaN"):
        masker(dict(batch))


def test_sequence_without_maskable_token_is_refused(tokenizer):
    ids = torch.tensor([[tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]])
    with pytest.raises(MaskpolicyError, match="no maskable token"):
        Masker(get_policy("random", tokenizer))({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 0]])})


def test_unknown_policy_and_unknown_option(tokenizer):
    with pytest.raises(ConfigError, match="unknown policy 'nope'"):
        get_policy("nope", tokenizer)
    with pytest.raises(ConfigError, match="has no option 'bogus'"):
        get_policy("span", tokenizer, bogus=1)


def test_bad_corruption_split_is_refused():
    with pytest.raises(ConfigError, match="<= 1"):
        MaskingConfig(mask_replace_prob=0.9, random_replace_prob=0.2)
