"""Paired differences to ``random``: does a policy beat random masking, seed for seed?

Cells of one task that share a seed share everything but the policy: the model's
initialization, the corpus order and the evaluation data. Much of the spread over seeds
(``mean ± std`` in the main tables) is therefore common to every policy, and comparing two
rows' means with their stds hides differences that each seed shows. Here each policy's
score for seed ``s`` is paired with ``random``'s score for seed ``s`` on the same task, and
the per-seed differences get a mean with a 95% Student-t confidence interval:

    mean(d) ± t(0.975, n - 1) * sd(d) / sqrt(n)

Only seeds with a finished cell in both rows count (a failed cell drops its seed from the
pair, not the comparison). One pair has no interval; differences that are all equal have
zero spread and the interval collapses to their mean.

The t quantile: scipy is not a dependency, so two-sided 95% quantiles are tabulated for
1..30 degrees of freedom (three decimals, as in printed tables; ``tests/test_paired.py``
checks each one against a numerical integration of the t density), and beyond 30 the
Cornish-Fisher expansion around the normal 1.959964 is used (within 1e-4 of the exact
value there; the plain 1.96 would make intervals of 31..120 pairs up to 4% too narrow).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .tables import markdown_table

BASELINE = "random"
HEADING = ("Paired difference to random, mean [95% CI] over seeds; * = interval excludes zero; "
           "no * = no difference shown")
EXPLAIN = ("Per seed: the policy's score minus `random`'s on the same task with the same seed (same "
           "initialization and data order); mean over the seeds both finished, with a 95% Student-t interval "
           "on those differences. `n/a (1 seed)`: one pair, no interval. `-`: no cell; `n/a`: not applicable.")
EXPLAIN_AGAIN = "As for the main table: per-seed differences to `random` (same seed), 95% Student-t interval."

# Two-sided 95% (upper 0.975) quantiles of Student's t, df = 1..30.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.959964
# Scores are rates in [0, 1] computed in floating point: two equal differences can come out a
# few ulps apart, and 0.3 - 0.1 - 0.2 is not 0. Spreads and means below this (relative to the
# differences' size) are float noise, not a difference between policies.
TOLERANCE = 1e-12


def t_quantile_975(df: int) -> float:
    """Upper 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class PairedDiff:
    """Mean of the per-seed differences (policy - baseline) with its 95% interval; ``low`` and
    ``high`` are nan without an interval (n < 2). ``differences``: seed -> difference."""
    n: int
    mean: float
    low: float
    high: float
    excludes_zero: bool
    method: str
    differences: dict = field(default_factory=dict)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def paired_difference(values: dict, baseline: dict) -> PairedDiff:
    """Pair ``values[seed]`` with ``baseline[seed]`` over the seeds with a finite score in both
    (others are dropped; dict order does not matter) and summarize the differences."""
    seeds = sorted(s for s in values.keys() & baseline.keys() if _finite(values[s]) and _finite(baseline[s]))
    differences = {s: values[s] - baseline[s] for s in seeds}
    n = len(seeds)
    if n == 0:
        return PairedDiff(0, math.nan, math.nan, math.nan, False, "no seed finished in both rows")
    mean = statistics.fmean(differences.values())
    if n == 1:
        return PairedDiff(1, mean, math.nan, math.nan, False, "n/a (1 seed): one difference, no interval", differences)
    scale = max(1.0, max(abs(d) for d in differences.values()))
    sd = statistics.stdev(differences.values())
    if sd <= TOLERANCE * scale:
        half, method = 0.0, f"paired t, n={n}: all differences equal (zero variance), interval collapsed to the mean"
    else:
        t = t_quantile_975(n - 1)
        half, method = t * sd / math.sqrt(n), f"paired t, n={n}, df={n - 1}, t={t:.3f}"
    low, high = mean - half, mean + half
    return PairedDiff(n, mean, low, high, low > TOLERANCE * scale or high < -TOLERANCE * scale, method, differences)


def _signed(value: float, digits: int) -> str:
    # Adding 0.0 turns a -0.0 left by rounding into 0.0: "+0.000", never "-0.000".
    return f"{round(value, digits) + 0.0:+.{digits}f}"


def format_diff(diff: PairedDiff, digits: int = 3) -> str:
    """``+0.031 [+0.012, +0.050] *`` (* = the interval excludes zero), ``+0.004 [-0.010, +0.018]``,
    ``+0.031 [n/a (1 seed)]``, or ``n/a (no common seed)``."""
    if diff.n == 0:
        return "n/a (no common seed)"
    if diff.n == 1:
        return f"{_signed(diff.mean, digits)} [n/a (1 seed)]"
    text = f"{_signed(diff.mean, digits)} [{_signed(diff.low, digits)}, {_signed(diff.high, digits)}]"
    return text + (" *" if diff.excludes_zero else "")


# --- a grid's rows against random ------------------------------------------------------

def seed_scores(grid: dict, task: str, policy: str) -> dict:
    """seed -> score of the finished cells of (task, policy)."""
    return {c["seed"]: c["score"] for c in grid["cells"]
            if c["task"] == task and c["policy"] == policy and c["status"] == "done"}


CSV_FIELDS = ("diff_n", "diff_mean", "diff_low", "diff_high", "excludes_zero")


@dataclass
class PairedTable:
    """Every non-baseline row of a grid table against the baseline, per task: a PairedDiff, or
    the main table's "-" (no cell) / "n/a" (not applicable) where there is nothing to pair."""
    tasks: list[str]
    policies: list[str]  # the rows compared (the baseline excluded)
    entries: dict  # (policy, task) -> PairedDiff | str
    scores: dict  # (policy, task) -> (policy's seed -> score, baseline's seed -> score)

    def markdown_rows(self) -> list[dict]:
        return [{"policy": p, **{t: self._text(p, t) for t in self.tasks}} for p in self.policies]

    def _text(self, policy: str, task: str) -> str:
        entry = self.entries[(policy, task)]
        return entry if isinstance(entry, str) else format_diff(entry)

    def section(self, heading: str = HEADING, explain: str = EXPLAIN) -> list[tuple[str, str]]:
        """[(heading, explanation + table)] for ``write_suite``; [] when there is no comparison."""
        if not self.policies:
            return []
        return [(heading, explain + "\n\n" + markdown_table(self.markdown_rows(), ["policy"] + self.tasks))]

    def csv_header(self, header: list[str]) -> list[str]:
        """The main table's columns, then ``<task> diff_n / diff_mean / diff_low / diff_high /
        excludes_zero`` per task (numbers; empty where there is none)."""
        return header + [f"{t} {name}" for t in self.tasks for name in CSV_FIELDS]

    def csv_rows(self, rows: list[dict]) -> list[dict]:
        """The main table's rows with the numeric columns added (the baseline's row: empty)."""
        return [{**row, **self._csv_values(row["policy"])} for row in rows]

    def _csv_values(self, policy: str) -> dict:
        values = {}
        for task in self.tasks:
            entry = self.entries.get((policy, task))
            if not isinstance(entry, PairedDiff) or entry.n == 0:
                continue
            number = {"diff_n": entry.n, "diff_mean": entry.mean, "diff_low": entry.low, "diff_high": entry.high}
            values.update({f"{task} {k}": "" if math.isnan(v) else (v if k == "diff_n" else f"{v:.6f}")
                           for k, v in number.items()})
            values[f"{task} excludes_zero"] = int(entry.excludes_zero)  # 1 / 0: sums to a count of shown differences
        return values

    def records(self) -> list[dict]:
        """For ``results.json``: each compared (task, policy) with its per-seed scores and
        differences, and the summary (nan written as null)."""
        out = []
        for (policy, task), entry in self.entries.items():
            if not isinstance(entry, PairedDiff):
                continue
            mine, base = self.scores[(policy, task)]
            out.append({
                "task": task, "policy": policy, "baseline": BASELINE, "n": entry.n,
                **{k: None if math.isnan(v) else v for k, v in (("mean", entry.mean), ("low", entry.low),
                                                                ("high", entry.high))},
                "excludes_zero": entry.excludes_zero, "method": entry.method,
                "seeds": [{"seed": s, "score": mine[s], BASELINE: base[s], "difference": d}
                          for s, d in entry.differences.items()]})
        return out


def compare_to_random(grid: dict, tasks: list[str], policies: list[str]) -> PairedTable:
    """Pair every row but ``random`` with ``random``, per task (no rows when the grid has no
    ``random`` row)."""
    rows = [p for p in policies if p != BASELINE] if BASELINE in policies else []
    entries, scores = {}, {}
    for policy in rows:
        for task in tasks:
            cells = [c for c in grid["cells"] if c["task"] == task and c["policy"] == policy]
            if not cells:
                entries[(policy, task)] = "-"
            elif all(c["status"] == "n/a" for c in cells):
                entries[(policy, task)] = "n/a"
            elif not any(c["task"] == task and c["policy"] == BASELINE for c in grid["cells"]):
                entries[(policy, task)] = "n/a (no random)"
            else:
                scores[(policy, task)] = (seed_scores(grid, task, policy), seed_scores(grid, task, BASELINE))
                entries[(policy, task)] = paired_difference(*scores[(policy, task)])
    return PairedTable(tasks=list(tasks), policies=rows, entries=entries, scores=scores)


def compare_curves_to_random(grid: dict, tasks: list[str], policies: list[str], key: str) -> PairedTable:
    """The same pairing at every evaluated step of the curve ``key`` (a cell's history entries
    that carry it, e.g. the downstream probes): one column ``<task> @ <step>`` per step that
    ``random`` recorded, each cell's score there being its ``key`` at that step."""
    columns, cells = [], []
    for task in tasks:
        steps = sorted({h["step"] for c in grid["cells"] if c["task"] == task and c["policy"] == BASELINE
                        and c["status"] == "done" for h in c.get("history", []) if key in h})
        for step in steps:
            column = f"{task} @ {step}"
            columns.append(column)
            for c in grid["cells"]:
                if c["task"] != task:
                    continue
                value = next((h[key] for h in c.get("history", []) if h["step"] == step and key in h), None)
                done = c["status"] == "done" and value is not None
                cells.append({"task": column, "policy": c["policy"], "seed": c["seed"],
                              "status": "done" if done else c["status"] if c["status"] == "n/a" else "failed",
                              "score": value})
    curve_policies = [p for p in policies if p != "none"]  # `none` has no pre-training, so no curve
    return compare_to_random({"cells": cells}, columns, curve_policies)
