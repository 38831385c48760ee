"""Which linear layers of a model are masked, and attaching / removing their masks.

``attach_score_masks`` registers a ``ScoreMask`` on ``weight`` of every ``nn.Linear``
whose qualified name matches the pattern, and freezes the original weight; ``masked_layers``
finds them again (after loading, in the bank, for statistics); ``baked_copy`` is an
ordinary model holding ``W * m`` as its weights.
"""
from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn.utils import parametrize

from maskpolicy.policies.errors import ConfigError

from .config import WeightMaskConfig
from .straight_through import FixedMask, ScoreMask, initial_scores


def matching_linears(model: nn.Module, pattern: str) -> dict[str, nn.Linear]:
    """``{qualified name: module}`` of the ``nn.Linear`` layers whose name matches, in
    model order; a clear error when none does (a wrong pattern, or a model without the
    named layers)."""
    regex = re.compile(pattern)
    found = {name: module for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and regex.search(name)}
    if not found:
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        example = ", ".join(linears[:4]) + (", ..." if len(linears) > 4 else "") if linears else "none"
        raise ConfigError(f"the weight-mask pattern {pattern!r} matches no linear layer of "
                          f"{type(model).__name__} (its linear layers: {example})")
    return found


def attach_score_masks(model: nn.Module, config: WeightMaskConfig, *, seed: int = 0) -> dict[str, ScoreMask]:
    """Mask the matching layers of ``model`` in place; returns ``{layer name: ScoreMask}``.
    The original weights are frozen (``requires_grad=False``); everything else is left as
    it is (the caller decides what else trains)."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, module in matching_linears(model, config.pattern).items():
        if parametrize.is_parametrized(module, "weight"):
            raise ConfigError(f"layer {name} already carries a parametrization on its weight")
        weight = module.weight
        weight.requires_grad_(False)
        scores = initial_scores(weight.shape, tau=config.tau, sparsity=config.initial_sparsity,
                                width=config.init_width, generator=generator)
        mask = ScoreMask(scores.to(device=weight.device, dtype=torch.float32), config.tau)
        parametrize.register_parametrization(module, "weight", mask)
        module.parametrizations.weight.original.requires_grad_(False)
        masks[name] = mask
    return masks


def attach_fixed_masks(model: nn.Module, keeps: dict[str, torch.Tensor]) -> None:
    """Apply stored binary masks ``{layer name: bool [out, in]}`` (a loaded artifact)."""
    modules = dict(model.named_modules())
    for name, keep in keeps.items():
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"the mask names layer {name}, which {type(model).__name__} does not have as a linear layer")
        if tuple(keep.shape) != tuple(module.weight.shape):
            raise ConfigError(f"the mask of {name} has shape {tuple(keep.shape)}, the layer's weight {tuple(module.weight.shape)}")
        parametrize.register_parametrization(module, "weight", FixedMask(keep.to(module.weight.device)))
        module.parametrizations.weight.original.requires_grad_(False)


def masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{layer name: its ScoreMask / FixedMask}`` for every masked layer of ``model``."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, (ScoreMask, FixedMask)):
                    out[name] = p
    return out


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer name: bool [out, in]}``, True where a weight is kept."""
    return {name: mask.keep().cpu() for name, mask in masked_layers(model).items()}


def masked_share(model: nn.Module) -> dict:
    """Share of weights switched off, per layer and over all masked weights."""
    per_layer, off, total = {}, 0, 0
    for name, keep in current_masks(model).items():
        n_off, n = int((~keep).sum()), keep.numel()
        per_layer[name] = n_off / n
        off, total = off + n_off, total + n
    return {"overall": off / max(total, 1), "masked_weights": total, "per_layer": per_layer}


def baked_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict an ordinary (unmasked) copy of ``model`` would have, with ``W * m``
    as each masked layer's ``weight``; the scores and stored masks are left out."""
    masked = {name: module for name, module in model.named_modules() if parametrize.is_parametrized(module, "weight")}
    state = {key: value for key, value in model.state_dict().items() if ".parametrizations." not in key}
    with torch.no_grad():
        for name, module in masked.items():
            state[f"{name}.weight" if name else "weight"] = module.weight.detach().clone()
    return state


def baked_copy(model: nn.Module) -> nn.Module:
    """A new, ordinary model of the same class with the masks applied to its weights; its
    ``save_pretrained`` writes plain weights that ``from_pretrained`` loads without
    maskpolicy. (Not ``deepcopy`` + ``remove_parametrizations``: a deep copy shares the
    parametrized module classes with the original, and removing the parametrization from
    the copy's class would break the original.)"""
    import copy

    fresh = type(model)(copy.deepcopy(model.config))
    fresh.load_state_dict(baked_state_dict(model))
    return fresh.to(next(model.parameters()).device).eval()
