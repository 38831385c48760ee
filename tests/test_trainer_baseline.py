"""benchmarks/trainer_baseline.py at tiny sizes: structure and like-for-like, never speed."""
from __future__ import annotations

import csv
import io
import json
import math

import pytest

from maskpolicy.benchmarks import trainer_baseline as tb
from maskpolicy.benchmarks.process_scaling import run_scaled

STEPS = 3


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainer_baseline")
    # No scaling subprocesses and no warm-up here: the torchrun part has its own test below.
    return tb.run(str(out), STEPS, repeats=1, with_scaling=False, warmup=False), out


def test_both_sides_take_the_same_steps_on_the_same_tokens(report):
    result, _ = report
    runs = result["data"]["side_by_side"]["runs"]
    mp, hf = runs["maskpolicy"][0], runs["hf"][0]
    assert mp["steps"] == hf["steps"] == STEPS
    # The same batches in the same order (accelerate's seedable sampler on both sides).
    assert mp["tokens"] == hf["tokens"] > 0
    assert hf["same_decay_groups"]
    for side in (mp, hf):
        assert math.isfinite(side["eval_loss"]) and side["eval_loss"] > 0
        assert side["seconds"] > 0 and side["tokens_per_second"] > 0


def test_outputs_hold_the_table_and_every_raw_number(report):
    result, out = report
    table = (out / "table.md").read_text()
    assert tb.MP in table and tb.HF in table and "--steps 3 --repeats 1" in table
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [r["unit"] for r in rows] == ["tokens/s", "tokens/s", "MLM loss, fixed masked batches",
                                         "MLM loss, fixed masked batches"]
    assert all(r["measure"].startswith("intermediate pre-training") for r in rows)  # the perf suite's measure
    assert rows[0]["variant"] == tb.HF and rows[0]["ratio"] == "1.00" and float(rows[1]["ratio"]) > 0
    data = json.loads((out / "results.json").read_text())
    assert data["machine_info"]["cpu_count"] >= 1 and data["machine_info"]["torch_threads"] >= 1
    assert data["settings"]["batch_size"] == 32 and data["settings"]["steps"] == STEPS
    assert "scaling" not in data and len(data["side_by_side"]["runs"]["hf"]) == 1


def test_two_processes_consume_the_global_batches_of_one(report, tmp_path):
    result, _ = report
    run = run_scaled(str(tmp_path / "two"), STEPS, processes=2, threads=1)
    assert run["processes"] == 2 and run["steps"] == STEPS
    # Each rank takes half of every global batch: together the tokens of the one-process run.
    assert run["tokens"] == result["data"]["side_by_side"]["runs"]["maskpolicy"][0]["tokens"]
    rows = tb.rows({**result["data"], "scaling": {"steps": STEPS, "median_tokens_per_second": {"2 processes x 1 thread": 1.0},
                                                   "ratio_vs_1x1": {"2 processes x 1 thread": 1.0}}})
    assert rows[-1]["variant"] == "2 processes x 1 thread" and rows[-1]["reference"] == "1 process x 1 thread"
