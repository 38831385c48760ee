"""From a hypergradient to the policy's distillation targets.

A meta-step explores a random subset of tokens (the candidates) and measures, for each, the
hypergradient ``g = dL_out/dw`` [B, T]: negative where masking the token lowers the downstream
loss (helpful), positive where it raises it (harmful), near zero where it does not matter.
The policy network is then fitted (BCE) to targets made from ``g`` by one of three rules:

- ``"share"``: 1 for the ``rate`` share of the candidates with the most negative ``g``, 0 else;
- ``"split"``: the same, keeping only the candidates above the largest between-class-variance
  split (Otsu) of the helpful ``-g``: fewer positives when fewer tokens carry signal than the
  budget holds (the harbour world: answers in half the passages);
- ``"three_way"`` (default): the ``split`` positives (with the cut at ``margin`` = half the
  split: on the dense world the split alone labels 52% of the first answer words and 0% of
  the subjects, half of it 84% and 0%; built-in world 80% / 0% and 98% / 4%) get 1, the clearly *harmful* candidates
  (``g > 0`` above the Otsu split of the positive ``g``) get 0, and every other candidate gets
  ``neutral`` (default: the budget share). The policy's whole ranking then means something,
  not only its top: helpful > neutral > harmful. A budget that is filled from the ranking
  (``MaskingConfig.fill = "ranking"``) takes neutral tokens before harmful ones; with the
  two-way rules every non-positive token is a 0, harmful and neutral alike, and the tail of
  the ranking is whatever the network generalises there.

``balanced_weights`` up-weights the positives by the negatives/positives ratio (capped), so
that the policy's probability reaches 0.5 on the tokens it should select: what the sampler's
``select_threshold`` reads when the budget is filled at random or not at all.
"""
from __future__ import annotations

import math

import torch

from maskpolicy.policies.errors import ConfigError

TARGET_RULES = ("share", "split", "three_way")
MAX_POS_WEIGHT = 20.0


def otsu_split(values: torch.Tensor) -> float:
    """The threshold between the two classes of 1-D ``values`` with the largest between-class
    variance (Otsu): the lowest value of the upper class."""
    x, _ = values.detach().double().sort()
    n = x.numel()
    if n < 2:
        return float(x[0]) if n else math.inf
    k = torch.arange(1, n, dtype=x.dtype)  # lower class = x[:k]
    csum = x.cumsum(0)[:-1]
    mean_low, mean_high = csum / k, (x.sum() - csum) / (n - k)
    between = k * (n - k) * (mean_high - mean_low) ** 2
    return float(x[int(between.argmax()) + 1])


def helpful(g: torch.Tensor, candidates: torch.Tensor, rate: float, rule: str = "split",
            margin: float = 1.0) -> torch.Tensor:
    """[B, T] bool: the ``rate`` share of the batch's candidates with the most negative ``g``,
    only where g < 0; with ``rule`` split/three_way only those with ``-g >= margin * s``, ``s``
    the Otsu split of the helpful ``-g`` (``margin`` < 1 keeps tokens somewhat below the split:
    the weaker word of a two-word answer, whose -g sits between the subject's and the other
    word's on the dense world).

    The share is taken over the whole batch, not per sequence: candidates are a random
    subset of the tokens, so a per-sequence top-k would call positive whatever happened to
    be explored in a sequence that holds nothing worth masking."""
    flat = torch.where(candidates, -g, torch.full_like(g, -math.inf)).flatten()
    n_pos = max(1, int(round(rate * int(candidates.sum()))))
    top = torch.zeros_like(flat, dtype=torch.bool)
    top[flat.topk(min(n_pos, flat.numel())).indices] = True
    top = top.view_as(g) & candidates & (g < 0)
    if rule != "share" and int(top.sum()) > 1:
        top = top & (-g >= margin * otsu_split(-g[candidates & (g < 0)]))
    return top


def harmful(g: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: candidates whose masking clearly raises the downstream loss: g > 0 and in
    the upper Otsu class of the positive g values (a single positive value counts)."""
    up = candidates & (g > 0)
    if int(up.sum()) > 1:
        up = up & (g >= otsu_split(g[up]))
    return up


def distill_targets(g: torch.Tensor, candidates: torch.Tensor, rate: float, rule: str = "three_way",
                    neutral: float | None = None, margin: float = 0.5) -> torch.Tensor:
    """[B, T] float targets in [0, 1] at the candidates (0 elsewhere); see the module doc.
    ``neutral``: the three-way rule's target for tokens neither helpful nor harmful
    (default ``rate``); ``margin``: the three-way rule's helpful cut, a fraction of the Otsu
    split (``helpful``; the split rule keeps 1)."""
    if rule not in TARGET_RULES:
        raise ConfigError(f"targets must be one of {', '.join(TARGET_RULES)}, got {rule!r}")
    pos = helpful(g, candidates, rate, rule, margin if rule == "three_way" else 1.0)
    target = pos.to(g.dtype)
    if rule == "three_way":
        level = rate if neutral is None else neutral
        middle = candidates & ~pos & ~harmful(g, candidates)
        target = torch.where(middle, torch.full_like(target, level), target)
    return target


def balanced_weights(target: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[B, T] BCE weights: positives (target 1) up-weighted by negatives/positives (at most 20),
    1 for the other candidates, 0 elsewhere."""
    pos = candidates & (target >= 1)
    n_pos, n_rest = int(pos.sum()), int((candidates & ~pos).sum())
    scale = min(n_rest / n_pos, MAX_POS_WEIGHT) if n_pos else 1.0
    weight = torch.where(pos, torch.full_like(target, max(scale, 1.0)), torch.ones_like(target))
    return torch.where(candidates, weight, torch.zeros_like(weight))
