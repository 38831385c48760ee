"""Paired differences to random: the t interval, pairing by seed, and the suites' tables
built from hand-made grids (no training)."""
from __future__ import annotations

import csv
import io
import json
import math

import pytest

from maskpolicy.benchmarks.paired import (PairedDiff, compare_to_random, format_diff, paired_difference,
                                          t_quantile_975)


def _t_cdf(q: float, df: int, intervals: int = 2000) -> float:
    """P(T <= q), q >= 0, by Simpson's rule on the t density (scipy is not a dependency)."""
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    density = lambda x: norm * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = q / intervals
    total = density(0) + density(q) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, intervals))
    return 0.5 + total * h / 3


@pytest.mark.parametrize("df", list(range(1, 31)) + [31, 45, 60, 120, 1000])
def test_tabulated_and_expanded_t_quantiles_are_the_975_quantile(df):
    # Three-decimal table entries are within 3e-5 of 0.975 in probability; a mistyped digit is not.
    assert _t_cdf(t_quantile_975(df), df) == pytest.approx(0.975, abs=5e-5)


def test_interval_matches_a_hand_computation():
    diff = paired_difference({0: 0.6, 1: 0.7, 2: 0.8}, {0: 0.5, 1: 0.5, 2: 0.5})  # differences 0.1, 0.2, 0.3
    half = 4.303 * 0.1 / math.sqrt(3)  # t(2) * sd / sqrt(n) = 0.2484
    assert diff.n == 3 and diff.mean == pytest.approx(0.2)
    assert (diff.low, diff.high) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert half == pytest.approx(0.2484, abs=1e-4)
    assert not diff.excludes_zero  # -0.048 .. 0.448
    assert diff.method == "paired t, n=3, df=2, t=4.303"
    assert format_diff(diff) == "+0.200 [-0.048, +0.448]"


def test_pairs_by_seed_dropping_unmatched_and_failed_seeds_in_any_order():
    values = {2: 0.8, 0: 0.6, 1: 0.7, 5: 0.9, 3: math.nan}
    baseline = {1: 0.5, 0: 0.5, 2: 0.5, 4: 0.1, 3: 0.5}
    diff = paired_difference(values, baseline)
    assert diff.n == 3 and sorted(diff.differences) == [0, 1, 2]  # seeds 4, 5 unmatched; seed 3 failed
    assert diff == paired_difference(dict(reversed(list(values.items()))), baseline)
    assert diff.differences[2] == pytest.approx(0.3)
    # Pairing, not sorting: the same values matched to other seeds give another answer.
    shuffled = paired_difference({0: 0.8, 1: 0.6, 2: 0.7}, {0: 0.7, 1: 0.5, 2: 0.6})
    assert shuffled.mean == pytest.approx(0.1) and shuffled.low == shuffled.high  # equal differences


def test_one_seed_has_no_interval_and_none_has_no_difference():
    one = paired_difference({0: 0.7, 1: 0.9}, {0: 0.5})
    assert (one.n, one.mean, one.excludes_zero) == (1, pytest.approx(0.2), False)
    assert math.isnan(one.low) and math.isnan(one.high) and "n/a (1 seed)" in one.method
    assert format_diff(one) == "+0.200 [n/a (1 seed)]"
    none = paired_difference({0: 0.7}, {1: 0.5})
    assert none.n == 0 and format_diff(none) == "n/a (no common seed)"


def test_zero_variance_collapses_the_interval_to_the_mean():
    # 0.3 - 0.2, 0.4 - 0.3, 0.35 - 0.25 differ in the last bits: float noise, not spread.
    same = paired_difference({0: 0.3, 1: 0.4, 2: 0.35}, {0: 0.2, 1: 0.3, 2: 0.25})
    assert same.low == same.high == same.mean == pytest.approx(0.1)
    assert same.excludes_zero and "zero variance" in same.method
    assert format_diff(same) == "+0.100 [+0.100, +0.100] *"
    ties = paired_difference({0: 0.3, 1: 0.1}, {0: 0.1 + 0.2, 1: 0.1})  # 0.3 - (0.1 + 0.2) = -5.6e-17
    assert not ties.excludes_zero and format_diff(ties) == "+0.000 [+0.000, +0.000]"  # no "-0.000"


def test_the_star_marks_intervals_that_exclude_zero_only():
    shown = PairedDiff(3, 0.031, 0.012, 0.050, True, "paired t")
    assert format_diff(shown) == "+0.031 [+0.012, +0.050] *"
    assert format_diff(PairedDiff(3, 0.004, -0.010, 0.018, False, "paired t")) == "+0.004 [-0.010, +0.018]"
    below = paired_difference({0: 0.1, 1: 0.2, 2: 0.15}, {0: 0.5, 1: 0.6, 2: 0.56})  # -0.4, -0.4, -0.41
    assert below.high < 0 and below.excludes_zero and format_diff(below).endswith("] *")


def _cells(scores: dict, seeds=(0, 1, 2)) -> list[dict]:
    """Grid records from {(task, policy): per-seed scores | "n/a"}; None = a failed cell."""
    cells = []
    for (task, policy), values in scores.items():
        for seed in seeds:
            cell = {"task": task, "policy": policy, "seed": seed, "steps": 4}
            if values == "n/a":
                cells.append({**cell, "status": "n/a", "reason": "classification tasks only"})
            elif values[seed] is None:
                cells.append({**cell, "status": "failed", "error": "boom"})
            else:
                cells.append({**cell, "status": "done", "score": values[seed], "history": [], "config": {}, "out": "x"})
    return cells


def test_grid_without_random_or_without_its_cells_gets_no_comparison():
    grid = {"cells": _cells({("t", "random"): [0.1, 0.2, 0.3], ("t", "span"): [0.2, 0.3, 0.4],
                             ("u", "span"): [0.1, 0.1, 0.1]})}
    assert compare_to_random(grid, ["t"], ["span"]).section() == []  # no random row
    table = compare_to_random(grid, ["t", "u", "v"], ["random", "span"])
    assert table.markdown_rows() == [{"policy": "span", "t": "+0.100 [+0.100, +0.100] *", "u": "n/a (no random)",
                                      "v": "-"}]


A, B = "synthetic:birthplace", "synthetic:colour"
SYNTHETIC = {
    (A, "none"): [0.0, 0.0, 0.0], (B, "none"): [0.0, 0.0, 0.0],
    (A, "random"): [0.40, 0.50, 0.60], (B, "random"): [0.20, 0.30, 0.25],
    (A, "salient_span"): [0.50, 0.62, 0.68], (B, "salient_span"): [0.25, 0.20, 0.30],
    (A, "selective"): "n/a", (B, "selective"): "n/a",
    (A, "learned-meta"): [0.45, 0.55, None], (B, "learned-meta"): [0.30, 0.40, 0.35],
}
DENSE = {(A, "none"): [0.0, 0.0, 0.0], (A, "random"): [0.10, 0.20, 0.30], (A, "salient_span"): [0.60, 0.70, 0.80],
         (A, "learned-supervised"): [0.12, 0.17, 0.31], (A, "learned-meta"): [0.10, 0.20, 0.30]}


def _fake_grid(scores_for):
    def run_grid(spec, root):
        scores = scores_for(root)
        return {"cells": _cells({(t, p): scores[(t, p)] for t in spec.tasks for p in spec.policies}, spec.seeds),
                "learned": {}, "kinds": {t: "cloze" for t in spec.tasks}}
    return run_grid


def _section(table: str, heading: str) -> str:
    return table.split(f"## {heading}")[1].split("\n## ")[0]


def test_synthetic_suite_tables_carry_the_paired_differences(tmp_path, monkeypatch):
    from maskpolicy.benchmarks import dense_world, synthetic_suite

    fake = _fake_grid(lambda root: DENSE if root.endswith("dense") else SYNTHETIC)
    monkeypatch.setattr(synthetic_suite, "run_grid", fake)
    monkeypatch.setattr(dense_world, "run_grid", fake)
    monkeypatch.setattr(dense_world, "mask_rows", lambda *a, **k: [])
    monkeypatch.setattr(synthetic_suite, "curve_plots", lambda *a, **k: [])
    monkeypatch.setattr(synthetic_suite, "run_transfer", lambda *a, **k: {"table": "t", "png": [], "scores": {},
                                                                          "rows": [], "failures": []})
    seq2seq_calls = []

    def fake_seq2seq(out, *, tasks, steps, **kwargs):
        seq2seq_calls.append((tasks, steps))
        return {"sections": [("Seq2seq section", "body")], "grids": {}, "costs": [], "png": []}

    monkeypatch.setattr(synthetic_suite, "run_seq2seq", fake_seq2seq)
    policies = ["none", "random", "salient_span", "selective", "learned-meta"]
    synthetic_suite.run_synthetic(str(tmp_path), seeds=3, steps=4, workers=1,
                                  sizes=dict(tasks=[A, B], policies=policies, dense=True, fill_compare=False,
                                             seq2seq_tasks=[A], seq2seq_steps=8))
    assert seq2seq_calls == [([A], 4)]  # --steps reaches the seq2seq grids too
    table = (tmp_path / "table.md").read_text()
    # Right below the main table, before every other section.
    assert table.index("| random | 0.500 ± 0.100 | 0.250 ± 0.050 |") < table.index("## Paired difference to random") \
        < table.index("## Steps to reach")
    paired = _section(table, "Paired difference to random, mean [95% CI] over seeds; * = interval excludes zero")
    assert f"| policy | {A} | {B} |" in paired and "| random |" not in paired
    assert "| none | -0.500 [-0.748, -0.252] * | -0.250 [-0.374, -0.126] * |" in paired
    # Seed for seed, salient_span beats random on A although the two rows' mean ± std overlap.
    assert "| salient_span | +0.100 [+0.050, +0.150] * | +0.000 [-0.215, +0.215] |" in paired
    assert "| selective | n/a | n/a |" in paired
    assert "| learned-meta | +0.050 [+0.050, +0.050] * | +0.100 [+0.100, +0.100] * |" in paired  # A: seed 2 failed
    assert table.index("## Dense world") < table.index("## Seq2seq section")
    dense = _section(table, "Dense world: paired difference to random")
    assert "| salient_span | +0.500 [+0.500, +0.500] * |" in dense
    assert "| learned-supervised | +0.000 [-0.066, +0.066] |" in dense

    rows = {r["policy"]: r for r in csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text()))}
    assert rows["salient_span"][A] == "0.600 ± 0.092"  # the main columns as before
    assert float(rows["salient_span"][f"{A} diff_mean"]) == pytest.approx(0.1)
    assert float(rows["salient_span"][f"{A} diff_low"]) == pytest.approx(0.1 - 4.303 * 0.02 / math.sqrt(3), abs=1e-6)
    assert (rows["salient_span"][f"{A} excludes_zero"], rows["salient_span"][f"{B} excludes_zero"]) == ("1", "0")
    assert rows["learned-meta"][f"{A} diff_n"] == "2"
    assert rows["random"][f"{A} diff_mean"] == "" and rows["selective"][f"{A} diff_mean"] == ""

    results = json.loads((tmp_path / "results.json").read_text())
    record = next(r for r in results["paired_to_random"] if r["task"] == A and r["policy"] == "learned-meta")
    assert [s["seed"] for s in record["seeds"]] == [0, 1]
    assert record["seeds"][1] == {"seed": 1, "score": 0.55, "random": 0.5, "difference": pytest.approx(0.05)}
    assert len(results["paired_to_random"]) == 6  # 3 compared rows x 2 tasks; selective is n/a
    assert len(results["cells"]) == 2 * 5 * 3  # the cells themselves as before
    assert {r["policy"] for r in results["dense"]["paired_to_random"]} == {"none", "salient_span", "learned-supervised",
                                                                           "learned-meta"}


def test_real_suite_table_pairs_each_task_column_with_random(tmp_path, monkeypatch):
    from maskpolicy.benchmarks import real_suite

    scores = {("mr", "none"): [0.72, 0.70, 0.74], ("mr", "random"): [0.70, 0.72, 0.71],
              ("mr", "selective"): [None, 0.75, None], ("mr", "learned-supervised"): [0.72, 0.75, 0.73],
              ("squad", "random"): [0.04, 0.05, 0.03], ("squad", "salient_span"): [0.60, 0.62, 0.61],
              ("squad", "learned-supervised"): [0.07, 0.06, 0.08]}
    monkeypatch.setattr(real_suite, "check_data", lambda data_dir, tasks: "data")
    monkeypatch.setattr(real_suite, "pretrain_cell", lambda config: {"status": "done", "metrics": {"score": 0.3},
                                                                     "train_seconds": 1.0})
    monkeypatch.setattr(real_suite, "run_grid", _fake_grid(lambda root: scores))
    monkeypatch.setattr(real_suite, "curve_plots", lambda *a, **k: [])
    real_suite.run_real(str(tmp_path), seeds=3, steps=4, workers=1,
                        sizes=dict(tasks=["mr", "squad"], policies=["none", "random", "selective", "learned-supervised"],
                                   squad_policies=["random", "salient_span", "learned-supervised"], transfer_seeds=0,
                                   squad_seq2seq=[]))
    table = (tmp_path / "table.md").read_text()
    paired = _section(table, "Paired difference to random")
    assert "| policy | mr | squad |" in paired
    assert "| none | +0.010 [-0.056, +0.076] | - |" in paired
    assert "| selective | +0.030 [n/a (1 seed)] | - |" in paired
    assert "| learned-supervised | +0.023 [+0.009, +0.038] * | +0.030 [-0.020, +0.080] |" in paired
    assert "| salient_span | - | +0.570 [+0.545, +0.595] * |" in paired
    rows = {r["policy"]: r for r in csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text()))}
    assert rows["selective"]["mr diff_n"] == "1" and rows["selective"]["mr diff_low"] == ""
    assert float(rows["learned-supervised"]["mr diff_high"]) == pytest.approx(0.07 / 3 + 4.303 * math.sqrt(1 / 3) * 0.01
                                                                              / math.sqrt(3), abs=1e-6)
    results = json.loads((tmp_path / "results.json").read_text())
    selective = next(r for r in results["paired_to_random"] if r["policy"] == "selective")
    assert selective["n"] == 1 and selective["low"] is None and selective["seeds"][0]["seed"] == 1


def test_curve_pairs_compare_each_evaluated_step_seed_for_seed():
    from maskpolicy.benchmarks.paired import compare_curves_to_random

    def cell(policy, seed, probes, status="done"):
        history = [{"step": 10, "loss": 1.0}] + [{"step": step, "probe_accuracy": value} for step, value in probes]
        return {"task": "mr", "policy": policy, "seed": seed, "status": status, "score": 0.5, "history": history}

    base = {0: 0.60, 1: 0.70, 2: 0.65}
    cells = [cell("random", s, [(30, base[s]), (60, base[s] + 0.01)]) for s in base]
    # `early` is ahead at step 30 by 0.02 +- a little on every seed, level at step 60.
    early_lead = {0: 0.019, 1: 0.021, 2: 0.020}
    cells += [cell("early", s, [(30, base[s] + early_lead[s]), (60, base[s] + 0.01 + (0.01 if s == 0 else -0.005))])
              for s in base]
    cells += [cell("none", s, []) for s in base]  # no pre-training: no curve, no row
    cells.append(cell("gappy", 0, [(30, 0.9), (60, 0.9)]))
    cells.append(cell("gappy", 1, [], status="failed"))
    table = compare_curves_to_random({"cells": cells}, ["mr"], ["none", "random", "early", "gappy"],
                                     "probe_accuracy")
    assert table.tasks == ["mr @ 30", "mr @ 60"] and table.policies == ["early", "gappy"]
    at_30 = table.entries[("early", "mr @ 30")]
    assert at_30.n == 3 and at_30.mean == pytest.approx(0.02) and at_30.excludes_zero
    assert at_30.differences == pytest.approx(early_lead)
    assert not table.entries[("early", "mr @ 60")].excludes_zero
    gappy = table.entries[("gappy", "mr @ 30")]
    assert gappy.n == 1 and gappy.differences == pytest.approx({0: 0.3})  # the failed seed drops out
