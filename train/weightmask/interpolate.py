"""Accuracy along the straight line from a masked model to a fine-tuned one.

Both come from the same start: the masked model's weights are ``W * m`` (its mask baked
in, its head as trained), the fine-tuned model's ``W'``. At ``alpha`` in [0, 1] the model
holds ``(1 - alpha) (W * m) + alpha W'`` in every tensor (body and head). Zhao et al.
report an almost constant accuracy along this line: the two solutions lie in one basin.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from .layers import baked_state_dict


def interpolation_points(points: int = 11) -> list[float]:
    return [i / (points - 1) for i in range(points)]


@torch.no_grad()
def interpolate_accuracy(masked: torch.nn.Module, finetuned: torch.nn.Module, score: Callable[[torch.nn.Module], float],
                         points: int = 11) -> list[dict]:
    """``[{"alpha": a, "score": score(model at a)}]`` for ``points`` evenly spaced alphas;
    ``score`` evaluates a model (accuracy or cloze exact match)."""
    start = baked_state_dict(masked)
    end = finetuned.state_dict()
    if set(start) != set(end):
        raise ValueError("the masked and the fine-tuned model do not have the same tensors")
    model = copy.deepcopy(finetuned)
    rows = []
    for alpha in interpolation_points(points):
        mixed = {k: torch.lerp(start[k].float(), end[k].float(), alpha).to(end[k].dtype)
                 if end[k].is_floating_point() else end[k] for k in end}
        model.load_state_dict(mixed)
        model.eval()
        rows.append({"alpha": alpha, "score": float(score(model))})
    return rows
