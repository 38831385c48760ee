"""The family suite end to end at toy sizes: per-world rows, the oracle under every fill and
its best, the learned policies' chosen fills, the default-fill choice, the hardest worlds
over seeds with paired differences."""
from __future__ import annotations

import json

import pytest

from maskpolicy.benchmarks.family_suite import BEST, with_best_oracle
from maskpolicy.benchmarks.suites import run_suite
from maskpolicy.benchmarks.validation_study import rank, spearman
from maskpolicy.policies.errors import ConfigError
from maskpolicy.policies.sampler import FILL_MODES

SMALL = {"task_options": {"num_entities": 120}, "vocab_size": 600, "max_length": 48}


def test_family_suite_at_toy_size(tmp_path):
    from maskpolicy.benchmarks.family_suite import run_family

    sizes = dict(tuning=[0], held_out=[100], meta_steps=2, hardest=1, seeds=2,
                 pretrain_options={**SMALL, "batch_size": 4},
                 learn_options={**SMALL, "validate": {"steps": 2, "batch_size": 4, "candidates": 1}, "lm_warmup_steps": 2,
                                "supervised": {"epochs": 1}, "meta": {"outer_batch": 4}})
    report = run_family(str(tmp_path), preset="quick", steps=3, workers=1, sizes=sizes)
    table = (tmp_path / "table.md").read_text()
    assert report["table"] == table and table.startswith("# family --quick")
    for heading in ("Distribution over worlds", "The default fill, chosen on the tuning worlds",
                    "The fills the learned policies' validation chose", "The 1 hardest held-out worlds",
                    "Paired difference"):
        assert heading in table
    results = json.loads((tmp_path / "results.json").read_text())
    worlds = results["worlds"]
    assert [(w["world"], w["set"]) for w in worlds] == [(0, "tuning"), (100, "held-out")]
    for row in worlds:
        oracle = {f: row[f"oracle {f}"] for f in FILL_MODES}
        assert sum("(best)" in v for v in oracle.values()) >= 1  # the best fill is marked
        best = max(float(v.split()[0]) for v in oracle.values())
        assert all(float(v.split()[0]) <= best for v in oracle.values())
        for policy in ("learned-supervised", "learned-meta"):
            assert row[policy].split("(")[1].rstrip(")") in FILL_MODES  # the fill its validation chose
    assert results["hardest"]["tasks"] == [worlds[1]["task"]] and results["hardest"]["seeds"] == [0, 1]
    hard = results["hardest"]["cells"]
    assert {c["seed"] for c in hard if c["policy"] == BEST} == {0, 1}
    assert all(c["status"] == "done" for c in results["cells"])
    assert "--quick --steps 3" in table
    # transfer within the held-out world: its main relation's policies on its second relation, filled at random
    (pair,) = results["transfer"]
    assert pair["world"] == 100 and pair["source -> target"].startswith(worlds[1]["task"].rsplit(":", 1)[1] + " -> ")
    assert pair["learned-supervised"].endswith("(random)") and pair["learned-meta"].endswith("(random)")
    assert pair["meta - random"] != "n/a" and "Transfer within a world" in table
    # the validation study: every validated candidate of the tuning world's learners, every fill, run long
    study = results["validation_study"]
    assert study["cells"] == 2 and "Does the short validation predict the full run?" in table
    for name, pairs in study["groups"].items():
        assert name.endswith(worlds[0]["task"]) and sorted(p["fill"] for p in pairs) == sorted(FILL_MODES)
        assert sum(p["kept"] for p in pairs) == 1  # exactly the pair the validation kept


def test_the_best_oracle_is_the_fill_with_the_best_mean_over_seeds():
    def cell(fill_score, seed):
        return {"task": "t", "policy": "salient_span", "seed": seed, "status": "done", "score": fill_score}

    grids = {"main": {"cells": []}, "oracles": {
        "none": {"cells": [cell(0.9, 0), cell(0.1, 1)]},  # best on seed 0 alone, worst in the mean
        "ranking": {"cells": [cell(0.6, 0), cell(0.6, 1)]},
        "random": {"cells": [cell(0.2, 0), cell(0.2, 1)]}}}
    best = with_best_oracle(grids, ["t"])["cells"]
    assert [(c["policy"], c["fill"], c["score"]) for c in best] == [(BEST, "ranking", 0.6)] * 2


def test_spearman_against_hand_computed_values():
    assert rank([3.0, 1.0, 2.0, 2.0]) == [4.0, 1.0, 2.5, 2.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4]; Pearson of those = 0.9486833
    assert spearman([1, 2, 2, 5], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [2, 1]) is None


def test_family_suite_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--seeds: the family suite"):
        run_suite("family", out=str(tmp_path / "x"), seeds=2)
    with pytest.raises(ConfigError, match="no preset 'gpu'"):
        run_suite("family", out=str(tmp_path / "x"), preset="gpu")
