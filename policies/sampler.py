"""Turn per-token mask probabilities into a mask with an exact budget.

Every policy ends here, so every policy obeys the same budget:
each row gets ``k = round(rate * maskable)`` masked tokens (at least 1 when any token is
maskable), drawn without replacement in proportion to the probabilities (Gumbel-top-k:
the top-k of ``log p + Gumbel noise`` is a draw without replacement with weights ``p``),
or the top-k of ``log p`` when deterministic.

Zero-probability tokens are still maskable: they are taken only after every positive one
(uniformly at random among themselves) so that the budget stays exact; ``fill_zero=False``
masks positive tokens only (for policies such as selective masking that may mask fewer).

Filling the budget (``fill``) is an explicit choice, the same for every policy. A policy
*selects* the tokens (units) whose probability is at least ``select_threshold`` (0.5); what
fills the rest of the budget:

- ``"ranking"`` (``sample_mask``'s default, the raw exact-budget draw): every token competes by its probability, so a
  policy that selects fewer tokens than the budget fills it from its own low-probability
  tail (and a selected token may lose to an unselected one in a Gumbel draw);
- ``"random"``: the selected tokens first (drawn by probability when they exceed the
  budget), then uniformly at random among the tokens the policy does not select: the tail
  of the ranking is ignored, so it cannot hide anything systematically;
- ``"none"`` (``DEFAULT_FILL``: what a run uses unless its config or its learned policy
  names another, see ``masker.py``): the selected tokens only, at most the budget: fewer masks when the
  policy selects fewer (as selective masking does, and as salient span masking masks its
  spans only).

Policies that give every maskable token the same probability 1 (``random``, ``whole_word``,
``span``) select every token, so every mode draws their exact budget the same way.

Units (whole words, spans, n-grams) are kept whole: a unit is drawn with the mean
probability of its tokens and taken only while it fits in the remaining budget (greedy in
key order, skipping units that do not fit). Whole-unit masks therefore never exceed ``k``
and fall short of it only when no remaining unit fits.
"""
from __future__ import annotations

import math

import torch

from .errors import ConfigError, MaskpolicyError

_ZERO_KEY = -1.0e4  # key of zero-probability tokens: below log(p) for any usable p > 0
_SELECTED = 1.0e5  # added to selected tokens' keys ("random" fill): above any unselected key
FILL_MODES = ("ranking", "random", "none")
DEFAULT_FILL = "none"
"""The fill of a run whose config and policy name none (``MaskingConfig.fill = None`` and a
policy without a validated choice). Learned policies carry the fill their downstream
validation chose (``LearnedPolicy.fill``), which runs use unless the config names one."""


def check_fill(fill: str, select_threshold: float) -> None:
    if fill not in FILL_MODES:
        raise ConfigError(f"fill must be one of {', '.join(FILL_MODES)}, got {fill!r}")
    if isinstance(select_threshold, bool) or not isinstance(select_threshold, (int, float)) \
            or not 0.0 < float(select_threshold) <= 1.0:
        raise ConfigError(f"select_threshold must be in (0, 1], got {select_threshold!r}")


def check_rate(rate: float) -> float:
    if not isinstance(rate, (int, float)) or not (0.0 < float(rate) < 1.0):
        raise ConfigError(f"mask rate must be in (0, 1), got {rate!r}")
    return float(rate)


def mask_budget(maskable: torch.Tensor, rate: float) -> torch.Tensor:
    """[B] long: round(rate * n) per row (half up), at least 1 where n > 0."""
    n = maskable.sum(dim=1)
    k = torch.floor(n.to(torch.float64) * rate + 0.5).long()
    return torch.where(n > 0, k.clamp(min=1), k.new_zeros(()))


def check_probs(probs: torch.Tensor) -> None:
    if not torch.isfinite(probs).all():
        raise MaskpolicyError("the policy returned NaN or inf mask probabilities")
    if (probs < 0).any() or (probs > 1).any():
        raise MaskpolicyError("the policy returned mask probabilities outside [0, 1]")


def _keys(probs: torch.Tensor, maskable: torch.Tensor, generator, deterministic: bool, fill_zero: bool,
          fill: str = "ranking", select_threshold: float = 0.5):
    """[B, N] ranking keys: higher = masked first; -inf = never masked."""
    p = probs.to(torch.float32)
    positive = maskable & (p > 0)
    keys = torch.where(positive, torch.log(p.clamp_min(1e-30)), torch.full_like(p, _ZERO_KEY))
    gumbel = None
    if not deterministic or fill == "random":
        device = p.device if generator is None else generator.device
        u = torch.rand(p.shape, generator=generator, device=device).to(p.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    if not deterministic:
        keys = keys + gumbel
    usable = positive if not fill_zero else maskable
    if fill == "none":  # selected tokens keep their keys (so the draw among them is the ranking's); the rest never
        keys = torch.where(maskable & (p >= select_threshold), keys, torch.full_like(keys, -math.inf))
    elif fill == "random":
        # Selected tokens above every unselected one; the unselected ordered by the noise alone
        # (uniform without replacement). float64: an offset of 1e5 in float32 would round the
        # keys to 1/128 and break ties by position.
        keys = torch.where(maskable & (p >= select_threshold), keys.double() + _SELECTED, gumbel.double())
    return torch.where(usable, keys, torch.full_like(keys, -math.inf))


def _top_k_rows(keys: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B, N] bool: the k[b] largest keys of each row (stable: earlier index wins ties)."""
    order = torch.argsort(keys, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(keys.shape[1], device=keys.device).expand_as(order))
    return (ranks < k[:, None]) & torch.isfinite(keys)


def sample_mask(
    probs: torch.Tensor,
    maskable: torch.Tensor,
    rate: float,
    *,
    units: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
    fill_zero: bool = True,
    fill: str = "ranking",
    select_threshold: float = 0.5,
) -> torch.Tensor:
    """[B, T] bool mask with the exact budget (see module doc; ``fill="none"`` may mask fewer).

    probs: [B, T] float in [0, 1]; maskable: [B, T] bool; units: [B, T] long unit id per
    token (any ids in [0, T), equal id = same unit; -1 where not maskable) or None for
    single tokens.
    """
    check_rate(rate)
    check_probs(probs)
    check_fill(fill, select_threshold)
    maskable = maskable.bool()
    k = mask_budget(maskable, rate)
    how = (generator, deterministic, fill_zero, fill, select_threshold)
    if units is None:
        keys = _keys(probs, maskable, *how)
        return _top_k_rows(keys, k) & maskable
    return _sample_units(probs, maskable, units, k, how)


def _sample_units(probs, maskable, units, k, how):
    B, T = probs.shape
    units = torch.where(maskable, units.long(), torch.full_like(units.long(), -1))
    slot = torch.where(units >= 0, units, torch.full_like(units, T))  # T = bin for non-maskable
    # Per-unit size and mean probability: [B, T+1], last column is the dump bin.
    size = torch.zeros(B, T + 1, dtype=torch.long, device=probs.device).scatter_add_(1, slot, maskable.long())
    psum = torch.zeros(B, T + 1, dtype=torch.float32, device=probs.device).scatter_add_(
        1, slot, probs.float() * maskable
    )
    size, psum = size[:, :T], psum[:, :T]
    exists = size > 0
    unit_p = torch.where(exists, psum / size.clamp(min=1), torch.zeros_like(psum))
    keys = _keys(unit_p, exists, *how)  # a unit is selected when its mean probability reaches the threshold
    order = torch.argsort(keys, dim=1, descending=True, stable=True)
    size_o = torch.gather(size, 1, order)
    ok_o = torch.isfinite(torch.gather(keys, 1, order))
    taken_o = torch.zeros_like(ok_o)
    remaining = k.clone()
    # Greedy "take if it fits" in key order, vectorised: each pass takes the longest prefix
    # (among units that still fit) whose cumulative size fits; repeat until nothing changes.
    for _ in range(T):
        eligible = ok_o & ~taken_o & (size_o <= remaining[:, None]) & (size_o > 0)
        cum = torch.cumsum(size_o * eligible, dim=1)
        take = eligible & (cum <= remaining[:, None])
        if not take.any():
            break
        taken_o |= take
        remaining = remaining - (size_o * take).sum(dim=1)
    # At least one unit per row with maskable tokens, even if the first is bigger than k.
    none = (taken_o.sum(dim=1) == 0) & (k > 0) & ok_o[:, 0]
    taken_o[:, 0] |= none
    taken = torch.zeros_like(taken_o).scatter_(1, order, taken_o)  # back to unit index order
    taken = torch.cat([taken, taken.new_zeros(B, 1)], dim=1)
    return torch.gather(taken, 1, slot) & maskable
