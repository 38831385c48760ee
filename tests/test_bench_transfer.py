"""Benchmark cells (resume, failure recording) and the transfer matrix, at toy sizes."""
from __future__ import annotations

import json
import math

import pytest

import maskpolicy.benchmarks.cells as cells
from maskpolicy.benchmarks.tables import fmt, mean_std
from maskpolicy.benchmarks.transfer import run_transfer

WORLD = {"task_options": {"num_entities": 24}, "vocab_size": 400, "max_length": 32}
TASKS = ["synthetic:birthplace", "synthetic:colour"]


def _run(root, seeds=(0,)):
    return run_transfer(TASKS, root=str(root), steps=3, seeds=list(seeds), method="supervised",
                        pretrain_options={**WORLD, "batch_size": 4, "eval_every": 0, "save_every": 0},
                        learn_options={**WORLD, "validate": {"steps": 4}, "supervised": {"epochs": 2}})


def test_transfer_matrix_is_written_and_resumes_without_rerunning(tmp_path, monkeypatch):
    report = _run(tmp_path)
    assert report["failures"] == []
    assert set(report["scores"]) == {f"{s} -> {t}" for s in TASKS + ["random"] for t in TASKS}
    assert all(0.0 <= v[0] <= 1.0 for v in report["scores"].values())
    table = (tmp_path / "transfer.md").read_text()
    assert "synthetic:birthplace (supervised)" in table and "gain kept" in table
    assert (tmp_path / "transfer.csv").read_text().count("\n") == len(TASKS) + 2  # header + sources + random
    # Every cell is finished: a second run reads them back and trains nothing.
    monkeypatch.setattr("maskpolicy.train.pretrain.pretrain", lambda *a, **k: pytest.fail("re-ran a finished cell"))
    monkeypatch.setattr("maskpolicy.meta.learn.learn", lambda *a, **k: pytest.fail("re-learned a finished policy"))
    again = _run(tmp_path)
    assert again["scores"] == report["scores"]


def test_a_failing_cell_is_recorded_and_the_rest_goes_on(tmp_path, monkeypatch):
    import maskpolicy.train.pretrain as train_pretrain

    real = train_pretrain.pretrain

    def flaky(config, **kwargs):
        if config.task == "synthetic:colour" and "random" in config.out:
            raise RuntimeError("disk full")
        return real(config, **kwargs)

    monkeypatch.setattr(train_pretrain, "pretrain", flaky)
    report = _run(tmp_path)
    assert [f["cell"] for f in report["failures"]] == ["synthetic:colour <- random seed 0"]
    assert "disk full" in report["failures"][0]["error"]
    failed = json.loads((tmp_path / "pretrain" / "synthetic_colour" / "random" / "seed0" / cells.FAILED_FILE).read_text())
    assert failed["status"] == "failed" and "RuntimeError: disk full" in failed["error"]
    assert math.isnan(report["scores"]["random -> synthetic:colour"][0])
    assert not math.isnan(report["scores"]["synthetic:birthplace -> synthetic:colour"][0])  # the rest ran
    monkeypatch.setattr(train_pretrain, "pretrain", real)
    assert _run(tmp_path)["failures"] == []  # retried on the next run; the record is gone
    assert not (tmp_path / "pretrain" / "synthetic_colour" / "random" / "seed0" / cells.FAILED_FILE).exists()


def test_seed_aggregation_formats():
    assert fmt([0.5]) == "0.500" and fmt([0.5, 0.7]) == "0.600 ± 0.141" and fmt([]) == "failed"
    assert mean_std([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(1.4142, rel=1e-4))
