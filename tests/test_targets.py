"""Distillation targets from a hypergradient (meta/targets.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskpolicy.meta.targets import balanced_weights, distill_targets, harmful, helpful, otsu_split
from maskpolicy.policies.errors import ConfigError


def test_three_way_puts_a_harmful_token_below_neutral_ones():
    # Two answers help a lot, one token hurts (masking it raises the downstream loss), the
    # rest hardly matter either way.
    g = torch.tensor([[-4.0, -3.5, 0.02, -0.03, 0.01, 2.5, 0.0, -0.01, 0.03, 0.02]])
    candidates = torch.ones_like(g, dtype=torch.bool)
    target = distill_targets(g, candidates, rate=0.3, rule="three_way")
    assert target[0, :2].tolist() == [1.0, 1.0]
    assert target[0, 5] == 0.0  # the harmful one
    neutral = target[0, [2, 3, 4, 6, 7, 8, 9]]
    assert torch.allclose(neutral, torch.full_like(neutral, 0.3))  # the budget share by default
    assert bool((target[0, 5] < neutral).all())
    # The two-way rules cannot tell the harmful token from the neutral ones.
    two_way = distill_targets(g, candidates, rate=0.3, rule="split")
    assert two_way[0, 5] == two_way[0, 2] == 0.0
    # An explicit neutral level.
    assert distill_targets(g, candidates, 0.3, "three_way", neutral=0.1)[0, 2] == pytest.approx(0.1)


def test_fitting_three_way_targets_ranks_helpful_neutral_harmful():
    """A logistic fit to the three-way targets orders the tokens as the hypergradient does
    at the two ends, which is what a ranking-filled budget reads."""
    torch.manual_seed(0)
    kinds = torch.tensor([0] * 20 + [1] * 60 + [2] * 20)  # 0 helpful, 1 neutral, 2 harmful
    g = torch.where(kinds == 0, -3.0, torch.where(kinds == 2, 2.0, 0.0)) + 0.05 * torch.randn(100)
    target = distill_targets(g[None], torch.ones(1, 100, dtype=torch.bool), 0.2, "three_way")[0]
    logit = torch.zeros(3, requires_grad=True)  # one logit per kind, as a policy sees token types
    opt = torch.optim.Adam([logit], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(logit[kinds], target).backward()
        opt.step()
    assert logit[0] > 0 > logit[1] > logit[2]


def test_helpful_and_harmful_sets():
    g = torch.tensor([[-5.0, 0.1, -0.2, 3.0], [-1.0, -3.0, 2.8, 0.05]])
    candidates = torch.tensor([[True, True, True, False], [True, True, True, True]])
    # rate 0.3 of 7 candidates: at most 2 helpful, above the Otsu split of -g.
    assert helpful(g, candidates, 0.3, "share").tolist() == [[True, False, False, False], [False, True, False, False]]
    assert helpful(g, candidates, 0.3, "split").sum() == 2
    # Harmful: only candidates (g[0, 3] = 3.0 is not one), the clearly positive class.
    assert harmful(g, candidates).tolist() == [[False, False, False, False], [False, False, True, False]]
    # Never helpful where g >= 0, never harmful where g <= 0.
    ones = torch.ones(1, 4, dtype=torch.bool)
    assert helpful(torch.ones(1, 4), ones, 0.9).sum() == 0
    assert harmful(-torch.ones(1, 4), ones).sum() == 0
    assert otsu_split(torch.tensor([1.0, 1.0, 9.0])) == pytest.approx(9.0)


def test_balanced_weights_lift_the_positives_to_the_threshold():
    target = torch.tensor([[1.0, 0.15, 0.15, 0.15, 0.0, 0.15, 0.0, 0.0]])
    candidates = torch.tensor([[True] * 7 + [False]])
    w = balanced_weights(target, candidates)
    assert w.tolist() == [[6.0, 1, 1, 1, 1, 1, 1, 0]]
    # A constant logit fitted with these weights sits at p = 0.5 on a 1:6 mix (without: ~1/7).
    logit = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([logit], lr=0.05)
    hard = torch.tensor([1.0] + [0.0] * 6)
    for _ in range(400):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(logit.expand(7), hard, weight=torch.tensor([6.0] + [1.0] * 6)).backward()
        opt.step()
    assert float(torch.sigmoid(logit.detach())) == pytest.approx(0.5, abs=0.02)
    assert balanced_weights(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool)).tolist() == [[1, 1, 1]]


def test_unknown_rule_is_refused():
    with pytest.raises(ConfigError, match="targets must be one of"):
        distill_targets(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 0.15, "quartiles")
