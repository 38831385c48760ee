"""Filling the budget beyond the tokens a policy selects (policies/sampler.py ``fill``)."""
from __future__ import annotations

import pytest
import torch

from maskpolicy.policies import ConfigError, MaskingConfig, sample_mask

# One row of 20 maskable tokens: 2 selected (p >= 0.5), a high tail (0.4) and a low tail (0.01).
PROBS = torch.tensor([[0.9, 0.8] + [0.4] * 6 + [0.01] * 12])
RATE = 0.25  # k = 5: the 2 selected + 3 to fill


def draws(fill: str, n: int = 4000, **kw) -> torch.Tensor:
    probs = PROBS.repeat(n, 1)
    return sample_mask(probs, torch.ones_like(probs, dtype=torch.bool), RATE, fill=fill,
                       generator=torch.Generator().manual_seed(0), **kw)


@pytest.mark.parametrize("fill", ["ranking", "random"])
def test_exact_budget(fill):
    assert torch.all(draws(fill).sum(1) == 5)


def test_random_fill_takes_the_selected_then_uniform_among_the_rest():
    mask = draws("random").float()
    assert torch.all(mask[:, :2] == 1)  # selected ones always, never lost to a Gumbel draw
    freq = mask[:, 2:].mean(0)  # 3 fills among 18 unselected tokens: 1/6 each, whatever their p
    assert torch.allclose(freq, torch.full_like(freq, 3 / 18), atol=0.025)
    assert abs(float(freq[:6].mean() - freq[6:].mean())) < 0.02  # the 0.4 tail gets no preference


def test_ranking_fill_follows_the_policy_tail():
    mask = draws("ranking").float()
    high, low = mask[:, 2:8].mean(), mask[:, 8:].mean()
    assert high > 5 * low  # the 0.4 tail is drawn far more often than the 0.01 tail
    assert mask[:, :2].mean() < 1.0  # a selected token can lose a Gumbel draw


def test_none_masks_only_the_selected():
    mask = draws("none")
    assert torch.all(mask[:, :2]) and not mask[:, 2:].any()
    assert torch.all(mask.sum(1) == 2)  # fewer than the budget of 5
    # More selected than the budget: exactly the budget, drawn among the selected.
    many = torch.tensor([[0.9] * 10 + [0.1] * 10]).repeat(500, 1)
    m = sample_mask(many, torch.ones_like(many, dtype=torch.bool), RATE, fill="none",
                    generator=torch.Generator().manual_seed(1))
    assert torch.all(m.sum(1) == 5) and not m[:, 10:].any()
    # A lower threshold selects the tail as well.
    assert torch.all(draws("none", select_threshold=0.3).sum(1) == 5)


def test_units_stay_whole_in_every_mode():
    probs = torch.tensor([[0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]).repeat(300, 1)
    units = torch.tensor([[0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10]]).repeat(300, 1)  # 6 two-token words
    maskable = torch.ones_like(probs, dtype=torch.bool)
    for fill in ("ranking", "random", "none"):
        m = sample_mask(probs, maskable, 0.34, units=units, fill=fill, generator=torch.Generator().manual_seed(2))
        pairs = m.view(300, 6, 2)
        assert torch.all(pairs[..., 0] == pairs[..., 1]), fill  # never half a unit
        expected = 2 if fill == "none" else 4  # k = round(4.08) = 4 tokens: the selected unit (+1 unit)
        assert torch.all(m.sum(1) == expected), fill
        if fill != "ranking":
            assert torch.all(m[:, :2]), fill


def test_fill_options_are_validated():
    with pytest.raises(ConfigError, match="fill must be one of"):
        MaskingConfig(fill="tail")
    with pytest.raises(ConfigError, match="select_threshold"):
        MaskingConfig(fill="random", select_threshold=0.0)
    assert MaskingConfig().fill is None  # the policy's validated choice, else the sampler's DEFAULT_FILL


def test_none_draws_exactly_the_ranking_mask_when_everything_is_selected():
    """A policy that selects every token (random, span, ...) gets the same mask under every
    mode from the same generator: "none" must not perturb the keys of the selected tokens."""
    probs = torch.ones(64, 30)
    maskable = torch.ones_like(probs, dtype=torch.bool)
    masks = {fill: sample_mask(probs, maskable, 0.15, fill=fill, generator=torch.Generator().manual_seed(3))
             for fill in ("ranking", "none", "random")}
    assert torch.equal(masks["none"], masks["ranking"]) and torch.equal(masks["random"], masks["ranking"])
    units = torch.arange(30).div(2, rounding_mode="floor").mul(2).expand(64, 30)  # two-token words
    unit_masks = {fill: sample_mask(probs, maskable, 0.15, units=units, fill=fill,
                                    generator=torch.Generator().manual_seed(3)) for fill in ("ranking", "none")}
    assert torch.equal(unit_masks["none"], unit_masks["ranking"])
