"""Compute curves: downstream score against intermediate steps, and steps-to-reach.

Each pre-training cell evaluates its model every ``steps / eval_points`` steps (the
periodic evaluation of ``train.pretrain``): cloze exact match for cloze tasks (the curve
key ``score``); for classification tasks the downstream points are the fine-tuned probes
(``probe_accuracy``, every ``probe_every`` steps: a fine-tuning at every evaluation would
cost more than the pre-training). Seeds are averaged point by point.

``steps to reach random``: the first evaluated step at which a policy's mean curve reaches
the final point of ``random``'s mean curve (same task, same steps, same curve), as a
fraction of ``random``'s steps. Train No Evil reports about one half for selective masking; the goal here is a
quarter or less. The resolution is one evaluation interval: a policy already there at the
first evaluation reads "<= 1/eval_points".
"""
from __future__ import annotations

import math
import statistics


def mean_curve(cells: list[dict], key: str = "score") -> tuple[list[int], list[float], list[float]]:
    """(steps, mean, std) of history entry ``key`` over the done cells (steps every seed has)."""
    histories = [{h["step"]: h[key] for h in c.get("history", []) if key in h}
                 for c in cells if c.get("status") == "done"]
    if not histories or not all(histories):
        return [], [], []
    steps = sorted(set.intersection(*(set(h) for h in histories)))
    mean = [statistics.fmean(h[s] for h in histories) for s in steps]
    std = [statistics.stdev([h[s] for h in histories]) if len(histories) > 1 else 0.0 for s in steps]
    return steps, mean, std


def steps_to_reach(steps: list[int], mean: list[float], target: float) -> int | None:
    """First evaluated step whose mean score is >= ``target`` (None: never)."""
    if math.isnan(target):
        return None
    for step, value in zip(steps, mean):
        if value >= target - 1e-12:
            return step
    return None


def reach_fraction(grid: dict, task: str, policy: str, reference: str = "random", key: str = "score") -> dict:
    """``{"target", "step", "fraction", "text"}`` for ``policy``'s ``key`` curve against the
    last point of ``reference``'s."""
    ref_cells = [c for c in grid["cells"] if c["task"] == task and c["policy"] == reference and c["status"] == "done"]
    cells = [c for c in grid["cells"] if c["task"] == task and c["policy"] == policy and c["status"] == "done"]
    if not ref_cells or not cells:
        return {"target": math.nan, "step": None, "fraction": math.nan, "text": "n/a"}
    ref_steps = max(int(c["steps"]) for c in ref_cells)
    ref_curve_steps, ref_mean, _ = mean_curve(ref_cells, key)
    if not ref_curve_steps or ref_curve_steps[-1] != ref_steps:
        return {"target": math.nan, "step": None, "fraction": math.nan, "text": "n/a"}
    target = ref_mean[-1]
    if len(ref_mean) > 1 and target <= ref_mean[0]:  # random did not improve (e.g. 0 cloze EM throughout)
        return {"target": target, "step": None, "fraction": math.nan, "text": "n/a (random flat)"}
    steps, mean, _ = mean_curve(cells, key)
    step = steps_to_reach(steps, mean, target)
    if step is None:
        return {"target": target, "step": None, "fraction": math.nan, "text": "not reached"}
    fraction = step / ref_steps
    text = f"<= {fraction:.2f}" if steps and step == steps[0] else f"{fraction:.2f}"
    return {"target": target, "step": step, "fraction": fraction, "text": text}
