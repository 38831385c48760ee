"""Does ``learn``'s short validation predict the long run? Every candidate, every fill, run long.

``maskpolicy learn`` keeps the (candidate, fill) pair whose short pre-training (300 steps by
default) gives the lowest answer NLL on the training questions. That choice is only worth
what it predicts about a full-length run. Here every validated candidate of a learner
(saved with ``LearnConfig.keep_candidates``) runs under every fill for the suite's full
number of steps, and the study reports, per learner cell (a task, a method, a seed):

- the Spearman rank correlation between the validation score (minus the answer NLL: higher
  is better) and the full run's cloze EM over that cell's pairs;
- over all cells pooled, the rank correlation between the validation's NLL gain over its
  ``random`` baseline and the full run's EM gain over the full ``random`` run (gains make
  worlds comparable);
- how often the pair the validation kept is the full runs' best, or within 0.02 EM of it.
"""
from __future__ import annotations

import glob
import json
import os
import statistics

from .cells import run_cells
from .grid import GridSpec, pretrain_config
from .tables import markdown_table

CLOSE = 0.02  # EM: "as good as the best" for the top-1 agreement


def rank(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (Pearson on ranks, ties averaged); None when either side is constant or n < 3."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = rank(x), rank(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx and syy else None


def candidate_dirs(policy_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(policy_dir, "candidates", "*")))


def run_study(spec: GridSpec, root: str, learned: dict, tasks: list[str], fills: tuple[str, ...],
              random_scores: dict[str, float]) -> dict:
    """Full-length runs of every candidate x fill of the learner cells of ``tasks`` (seed 0):
    ``learned`` is a grid's ``learned`` record, ``random_scores`` task -> the full random run's EM."""
    jobs, keys = [], []
    for method, cells in learned.items():
        for task in tasks:
            cell = cells.get(f"{task} seed 0", {})
            if cell.get("status") != "done":
                continue
            for directory in candidate_dirs(cell["policy"]):
                for fill in fills:
                    row = f"candidate-{method}-{os.path.basename(directory)}-{fill}"
                    extra = {"masking": {**spec.pretrain_options.get("masking", {}), "fill": fill}}
                    jobs.append(("pretrain", pretrain_config(spec, root, task, row, directory, 0, **extra)))
                    keys.append((method, task, directory, fill, cell.get("validation") or {}))
    groups: dict[tuple[str, str], list[dict]] = {}
    for (method, task, directory, fill, kept), result in zip(keys, run_cells(jobs, spec.workers)):
        validation = _validation_row(directory, fill)
        if result["status"] != "done" or validation is None:
            continue
        groups.setdefault((method, task), []).append({
            "candidate": validation["candidate"], "fill": fill, "answer_nll": validation["answer_nll"],
            "nll_gain": validation["nll_gain"], "em": float(result["metrics"]["score"]),
            "kept": validation["candidate"] == kept.get("selected") and fill == kept.get("selected_fill")})
    return summarise(groups, random_scores)


def _validation_row(directory: str, fill: str) -> dict | None:
    try:
        with open(os.path.join(directory, "policy_config.json"), encoding="utf-8") as fh:
            rows = json.load(fh)["metadata"]["validation"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None
    return next((r for r in rows if r.get("fill") == fill), None)


def summarise(groups: dict, random_scores: dict[str, float]) -> dict:
    rows, per_cell, gains_val, gains_full, agree, close = [], [], [], [], 0, 0
    for (method, task), pairs in sorted(groups.items()):
        rho = spearman([-p["answer_nll"] for p in pairs], [p["em"] for p in pairs])
        best = max(p["em"] for p in pairs)
        kept = next((p for p in pairs if p["kept"]), None)
        if rho is not None:
            per_cell.append(rho)
        if kept is not None:
            agree += kept["em"] == best
            close += best - kept["em"] <= CLOSE
        for p in pairs:
            if task in random_scores:
                gains_val.append(p["nll_gain"])
                gains_full.append(p["em"] - random_scores[task])
        rows.append({"task": task, "method": method, "pairs": str(len(pairs)),
                     "rank correlation": "n/a" if rho is None else f"{rho:+.2f}",
                     "kept pair: full EM": "n/a" if kept is None else f"{kept['em']:.3f} ({kept['candidate']}, "
                                                                       f"{kept['fill']})",
                     "best full EM": f"{best:.3f}"})
    pooled = spearman(gains_val, gains_full)
    kept_cells = sum(any(p["kept"] for p in pairs) for pairs in groups.values())
    return {"rows": rows, "groups": {f"{m} {t}": pairs for (m, t), pairs in groups.items()},
            "mean_rank_correlation": statistics.fmean(per_cell) if per_cell else None,
            "pooled_gain_rank_correlation": pooled, "kept_is_best": agree, "kept_within": close,
            "cells": kept_cells}


STUDY_HEADER = ["task", "method", "pairs", "rank correlation", "kept pair: full EM", "best full EM"]


def study_text(study: dict, steps: int, validate_steps: int) -> str:
    mean, pooled = study["mean_rank_correlation"], study["pooled_gain_rank_correlation"]
    head = (f"Every validated (candidate, fill) pair run for {steps} steps; validation ran {validate_steps} steps. "
            f"Mean rank correlation (validation -NLL vs full-run EM) over learner cells: "
            f"{'n/a' if mean is None else f'{mean:+.2f}'}; pooled over cells, NLL gain vs EM gain over random: "
            f"{'n/a' if pooled is None else f'{pooled:+.2f}'}. The kept pair is the full runs' best in "
            f"{study['kept_is_best']} of {study['cells']} cells, within {CLOSE} EM of it in {study['kept_within']}.")
    return head + "\n\n" + markdown_table(study["rows"], STUDY_HEADER)
