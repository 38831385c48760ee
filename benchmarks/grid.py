"""Policy grid: tasks x policies x seeds at equal intermediate compute.

Every trained cell of a task runs the same number of optimizer steps with the same batch
size, corpus, model, mask budget and seed list; only the policy differs. Rows:

- ``none``: no intermediate pre-training (the starting model evaluated as it is);
- heuristics by name (``random``, ``whole_word``, ``span``, ``salient_span``, ``pmi``);
- ``selective``: Train No Evil (Gu et al. 2020): a policy network trained on buffer-rule
  importance labels from a fine-tuned classifier, masking *only* tokens it predicts
  important (p >= 0.5, the default fill ``none``), top-scored first (deterministic), so it
  may use less than the budget; classification tasks only;
- ``learned-supervised``: the policy network from ``maskpolicy learn --method supervised``
  (answer spans for cloze tasks, the same importance labels for classification tasks),
  sampled (Gumbel) under the suite's fill mode;
- ``learned-meta``: the policy network meta-learned from the downstream loss (cloze tasks).

Each seed learns its own policy (``policies/<task>/<method>/seed<k>``), so the spread over
seeds includes the spread of policy learning. Cells live in ``pretrain/<task>/<row>/seed<k>``;
a learned row of task T is named ``learned-<method>-<T>``, the diagonal of the transfer
matrix, so both read the same cells.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from maskpolicy.policies.errors import ConfigError
from maskpolicy.train.config import PretrainConfig

from .cells import learned_policies, run_cells, safe_name
from .tables import fmt, mean_std

HEURISTICS = ("random", "whole_word", "span", "salient_span", "pmi")
LEARNED = {"learned-supervised": "supervised", "learned-meta": "meta", "selective": "supervised"}
GRID_POLICIES = ("none",) + HEURISTICS + ("selective", "learned-supervised", "learned-meta")


@dataclass
class GridSpec:
    tasks: list[str]
    policies: list[str]
    seeds: list[int]
    steps: int
    eval_points: int = 20  # evaluations along each run (compute curves)
    pretrain_options: dict = field(default_factory=dict)  # PretrainConfig keys shared by all cells
    learn_options: dict = field(default_factory=dict)  # LearnConfig keys shared by all learned policies
    workers: int = 1
    curve_key: str = "score"  # history entry of the compute curves ("probe_accuracy": fine-tuned probes)
    policy_root: str | None = None  # where learned policies live (default: the grid's root); grids that
    #   differ only in how policies are used (the fill comparison) share one set of learned policies

    def __post_init__(self) -> None:
        unknown = [p for p in self.policies if p not in GRID_POLICIES]
        if unknown:
            raise ConfigError(f"unknown grid policy {', '.join(map(repr, unknown))}; known: {', '.join(GRID_POLICIES)}")
        if not self.tasks or not self.seeds:
            raise ConfigError("a grid needs at least one task and one seed")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")


def not_applicable(policy: str, kind: str) -> str | None:
    """Why ``policy`` has no cell for a task of ``kind`` (None: it has one)."""
    if policy == "selective" and kind != "classification":
        return "selective masking scores words with a task classifier: classification tasks only"
    if policy == "learned-meta" and kind != "cloze":
        return "meta-gradients here need a cloze downstream loss"
    return None


def row_name(policy: str, task: str) -> str:
    """Directory name of a grid row (learned rows match the transfer matrix's diagonal)."""
    return f"learned-{LEARNED[policy]}-{safe_name(task)}" if policy in ("learned-supervised", "learned-meta") else policy


def pretrain_config(spec: GridSpec, root: str, task: str, row: str, policy: str, seed: int, **extra) -> PretrainConfig:
    return PretrainConfig.from_dict({
        **spec.pretrain_options, **extra, "task": task, "policy": policy, "steps": spec.steps, "seed": seed,
        "eval_every": max(spec.steps // spec.eval_points, 1), "save_every": spec.steps, "progress": False,
        "out": os.path.join(root, "pretrain", safe_name(task), row, f"seed{seed}")})


def task_kinds(spec: GridSpec) -> dict[str, str]:
    from maskpolicy.tasks.registry import get_task

    options = spec.pretrain_options
    return {t: get_task(t, data_dir=options.get("data_dir"), **options.get("task_options", {})).kind for t in spec.tasks}


def run_grid(spec: GridSpec, root: str) -> dict:
    """Run (or read back) every cell; ``{"cells": [...], "learned": {...}, "kinds": {...}}``.
    A cell record: task, policy, seed, status, score, metrics, history, config, error."""
    kinds = task_kinds(spec)
    learned = {}
    for method in sorted({LEARNED[p] for p in spec.policies if p in LEARNED}):
        tasks = [t for t in spec.tasks if any(not not_applicable(p, kinds[t]) for p in spec.policies
                                              if LEARNED.get(p) == method)]
        if tasks:
            learned[method] = learned_policies(tasks, method, spec.seeds, spec.policy_root or root, options=spec.learn_options,
                                               workers=spec.workers)
    keys, jobs, records = [], [], []
    for task in spec.tasks:
        for policy in spec.policies:
            for seed in spec.seeds:
                record = {"task": task, "policy": policy, "seed": seed, "steps": spec.steps}
                reason = not_applicable(policy, kinds[task])
                if reason:
                    records.append({**record, "status": "n/a", "reason": reason})
                    continue
                if policy in LEARNED:
                    cell = learned[LEARNED[policy]][(task, seed)]
                    if cell["status"] != "done":
                        records.append({**record, "status": "failed", "error": f"learning the policy: {cell['error']}"})
                        continue
                    extra = {"masking": {**spec.pretrain_options.get("masking", {}), "fill_zero": False,
                                         "deterministic": True}} if policy == "selective" else {}
                    job = ("pretrain", pretrain_config(spec, root, task, row_name(policy, task), cell["policy"], seed, **extra))
                elif policy == "none":
                    job = ("baseline", pretrain_config(spec, root, task, "none", "random", seed))
                else:
                    job = ("pretrain", pretrain_config(spec, root, task, policy, policy, seed))
                records.append(record)
                keys.append(len(records) - 1)
                jobs.append(job)
    for index, job, cell in zip(keys, jobs, run_cells(jobs, spec.workers)):
        records[index].update(_cell_record(job[1], cell))
    return {"cells": records, "learned": {m: {f"{t} seed {s}": _learn_record(c) for (t, s), c in cells.items()}
                                          for m, cells in learned.items()}, "kinds": kinds}


def _cell_record(config: PretrainConfig, cell: dict) -> dict:
    if cell["status"] != "done":
        return {"status": "failed", "error": cell["error"], "config": cell.get("config"), "out": config.out}
    return {"status": "done", "score": float(cell["metrics"]["score"]), "metrics": cell["metrics"],
            "history": cell.get("history", []), "train_seconds": cell.get("train_seconds"),
            "config": cell["config"], "out": config.out}


def _learn_record(cell: dict) -> dict:
    if cell["status"] != "done":
        return {"status": "failed", "error": cell["error"]}
    return {"status": "done", "policy": cell["policy"], "seconds": cell.get("seconds"), "held_out": cell.get("held_out"),
            "validation": cell.get("validation")}


def scores(grid: dict, task: str, policy: str) -> list[float]:
    return [c["score"] if c["status"] == "done" else math.nan
            for c in grid["cells"] if c["task"] == task and c["policy"] == policy]


def grid_rows(grid: dict, spec: GridSpec) -> list[dict]:
    """One row per policy, one column per task: "mean ± std" over seeds, n/a, failed, or
    "-" where the grid has no cell for that pair (a suite that runs a policy for some tasks only)."""
    rows = []
    for policy in spec.policies:
        row = {"policy": policy}
        for task in spec.tasks:
            cells = [c for c in grid["cells"] if c["task"] == task and c["policy"] == policy]
            if not cells:
                row[task] = "-"
            elif all(c["status"] == "n/a" for c in cells):
                row[task] = "n/a"
            else:
                row[task] = fmt(scores(grid, task, policy))
        rows.append(row)
    return rows


def policy_means(grid: dict, spec: GridSpec) -> dict[tuple[str, str], float]:
    return {(t, p): mean_std(scores(grid, t, p))[0] for t in spec.tasks for p in spec.policies}
