"""``maskpolicy bench --suite weightmask`` at test sizes (the synthetic start only: no data
files needed): every section is filled, cells are read back on a re-run, and the reported
numbers agree with the cells."""
from __future__ import annotations

import json

import pytest

from maskpolicy.benchmarks.weightmask_suite import run_weightmask

SIZES = {"seeds": 2, "synthetic_steps": 30, "serving": [1, 2], "timing_steps": 2, "head_learning_rate": 1e-3,
         "mask": {"score_learning_rate": 1e-2},
         "starts": {"synthetic": dict(tasks=["synthetic:birthplace"], epochs=1, learning_rate=5e-4,
                                      max_train_examples=None)}}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-weightmask")
    return out, run_weightmask(str(out), preset="quick", sizes=SIZES, workers=1)


def test_tables_and_results(suite):
    out, result = suite
    text = result["table"]
    for heading in ("Paired differences", "Bytes stored per task", "Serving N tasks", "Step time",
                    "Accuracy from the masked"):
        assert heading in text
    results = json.loads((out / "results.json").read_text())
    cells = results["cells"]
    assert len(cells) == 3 * 2 and all(c["status"] == "done" for c in cells.values())
    serving = {row["N"]: float(row["bank / one model"]) for row in results["serving"]}
    assert serving[1] < serving[2] < 1.2  # one base, a few bits per task on top
    assert len(results["interpolation"]) == 1 and len(results["interpolation"][0]) == 2 + 11
    masks = [c for k, c in cells.items() if "/mask/" in k]
    assert all(0 < c["masked_share"] < 1 for c in masks)
    assert (out / "interpolation_synthetic_synthetic_birthplace.png").is_file() or "matplotlib" not in text


def test_rerun_reads_cells_back(suite):
    out, first = suite
    again = run_weightmask(str(out), preset="quick", sizes=SIZES, workers=1)
    assert json.loads((out / "results.json").read_text())["cells"] == json.loads(
        (out / "results.json").read_text())["cells"]
    assert again["table"].split("`maskpolicy bench")[0] .count("|") == first["table"].split("`maskpolicy bench")[0].count("|")
