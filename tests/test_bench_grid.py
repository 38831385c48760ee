"""Policy grid, compute curves and suite dispatch, at toy sizes."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from maskpolicy.benchmarks.cells import run_cells
from maskpolicy.benchmarks.curves import mean_curve, reach_fraction, steps_to_reach
from maskpolicy.benchmarks.grid import GridSpec, grid_rows, pretrain_config, run_grid
from maskpolicy.benchmarks.suites import run_suite
from maskpolicy.policies.errors import ConfigError

WORLD = {"task_options": {"num_entities": 24}, "vocab_size": 400, "max_length": 32}
TASK = "synthetic:birthplace"


def _spec(seeds=(0, 1), policies=("none", "random", "salient_span", "selective", "learned-supervised"), workers=1):
    return GridSpec(tasks=[TASK], policies=list(policies), seeds=list(seeds), steps=4, eval_points=2,
                    pretrain_options={**WORLD, "batch_size": 4},
                    learn_options={**WORLD, "validate": {"steps": 4}, "supervised": {"epochs": 2}}, workers=workers)


def test_grid_runs_every_cell_marks_na_and_resumes(tmp_path, monkeypatch):
    grid = run_grid(_spec(), str(tmp_path))
    cells = grid["cells"]
    assert len(cells) == 5 * 2
    na = [c for c in cells if c["status"] == "n/a"]
    assert {c["policy"] for c in na} == {"selective"} and "classification" in na[0]["reason"]
    done = [c for c in cells if c["status"] == "done"]
    assert len(done) == 8
    for c in done:
        assert 0.0 <= c["score"] <= 1.0
        assert c["config"]["seed"] == c["seed"]
    trained = [c for c in done if c["policy"] != "none"]
    assert all([h["step"] for h in c["history"]] == [2, 4] for c in trained)  # eval_points=2 along 4 steps
    assert all(c["config"]["steps"] == 4 and c["config"]["batch_size"] == 4 for c in trained)  # equal compute
    none = [c for c in done if c["policy"] == "none"]
    assert all(c["history"][0]["step"] == 0 and c["config"]["steps"] == 0 for c in none)
    # Each seed's learned policy drives that seed's cell, and it is stored under the seed.
    learned = [c for c in done if c["policy"] == "learned-supervised"]
    assert [c["config"]["policy"].split("/")[-2] for c in learned] == ["seed0", "seed1"]
    rows = {r["policy"]: r[TASK] for r in grid_rows(grid, _spec())}
    assert rows["selective"] == "n/a" and " ± " in rows["random"]
    # Everything is finished: a second run trains nothing and reads back the same numbers.
    monkeypatch.setattr("maskpolicy.train.pretrain.pretrain", lambda *a, **k: pytest.fail("re-ran a finished cell"))
    monkeypatch.setattr("maskpolicy.meta.learn.learn", lambda *a, **k: pytest.fail("re-learned a finished policy"))
    monkeypatch.setattr("maskpolicy.benchmarks.cells._evaluate_start_model", lambda *a, **k: pytest.fail("re-evaluated"))
    again = run_grid(_spec(), str(tmp_path))
    assert [c.get("score") for c in again["cells"]] == [c.get("score") for c in cells]


def test_parallel_workers_give_the_same_numbers_as_one_process(tmp_path):
    spec = _spec(seeds=(0,), policies=("random",))
    jobs = [("pretrain", pretrain_config(spec, str(tmp_path / name), TASK, "random", "random", 0))
            for name in ("a", "b")]
    one = run_cells(jobs[:1], workers=1)[0]
    both = run_cells(jobs, workers=2)  # "a" is read back, "b" is trained in a worker process
    assert both[0]["reused"] and not both[1]["reused"]
    assert both[1]["history"] == one["history"] and both[1]["metrics"]["score"] == one["metrics"]["score"]


def _cell(policy, seed, curve, steps=100):
    return {"task": "t", "policy": policy, "seed": seed, "status": "done", "steps": steps, "score": curve[-1][1],
            "history": [{"step": s, "score": v} for s, v in curve]}


def test_curves_average_seeds_and_find_the_first_step_reaching_random():
    grid = {"cells": [
        _cell("random", 0, [(25, 0.0), (50, 0.1), (75, 0.2), (100, 0.3)]),
        _cell("random", 1, [(25, 0.0), (50, 0.1), (75, 0.2), (100, 0.5)]),  # final mean 0.4
        _cell("learned", 0, [(25, 0.2), (50, 0.5), (75, 0.9), (100, 1.0)]),
        _cell("learned", 1, [(25, 0.2), (50, 0.3), (75, 0.9), (100, 1.0)]),  # mean at 50: 0.4
        _cell("early", 0, [(25, 0.6), (50, 0.7), (75, 0.8), (100, 0.9)]),
        _cell("never", 0, [(25, 0.0), (50, 0.1), (75, 0.1), (100, 0.2)]),
    ]}
    steps, mean, std = mean_curve([c for c in grid["cells"] if c["policy"] == "learned"])
    assert steps == [25, 50, 75, 100] and mean == pytest.approx([0.2, 0.4, 0.9, 1.0])
    assert std[1] == pytest.approx(math.sqrt(0.02))
    assert steps_to_reach(steps, mean, 0.4) == 50
    assert reach_fraction(grid, "t", "learned")["text"] == "0.50"
    assert reach_fraction(grid, "t", "early")["text"] == "<= 0.25"  # resolution: one evaluation interval
    assert reach_fraction(grid, "t", "never")["text"] == "not reached"
    assert reach_fraction(grid, "t", "missing")["text"] == "n/a"


@pytest.mark.parametrize("kwargs, message", [
    (dict(suite="nope"), "unknown suite 'nope'; known: quickstart, synthetic, real, perf"),
    (dict(suite="synthetic", policies=["random"]), "--policies: only for the quickstart suite"),
    (dict(suite="synthetic", seeds=0), "--seeds must be >= 1"),
    (dict(suite="synthetic", workers=0), "--workers must be >= 1"),
    (dict(suite="quickstart", seeds=3), "the quickstart suite runs one seed"),
    (dict(suite="quickstart", preset="gpu"), "suite 'quickstart' has no preset 'gpu'; presets: full, quick"),
    (dict(suite="synthetic", quick=True, preset="gpu"), "--quick and --preset gpu: choose one"),
    (dict(suite="perf", transfer_seeds=1), "--transfer-seeds: suite 'perf' has no transfer matrix"),
    (dict(suite="synthetic", transfer_seeds=-1), "--transfer-seeds -1: must be between 0 (no transfer matrix) and the number of seeds (3)"),
    (dict(suite="synthetic", seeds=2, transfer_seeds=3), "--transfer-seeds 3: must be between 0 (no transfer matrix) and the number of seeds (2)"),
    (dict(suite="real", quick=True, seeds=1, transfer_seeds=2, data_dir="nowhere"), "--transfer-seeds 2: must be between"),
])
def test_bench_options_are_checked_before_anything_runs(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_suite(out=str(tmp_path / "o"), **kwargs)
    assert not (tmp_path / "o").exists()


def test_grid_spec_refuses_unknown_policies():
    with pytest.raises(ConfigError, match="unknown grid policy 'bert'"):
        GridSpec(tasks=[TASK], policies=["bert"], seeds=[0], steps=1)


def test_results_json_of_a_grid_cell_holds_seed_steps_and_config(tmp_path):
    grid = run_grid(_spec(seeds=(3,), policies=("random",)), str(tmp_path))
    cell = grid["cells"][0]
    saved = json.loads((tmp_path / "pretrain" / "synthetic_birthplace" / "random" / "seed3" / "results.json").read_text())
    assert saved["config"]["seed"] == 3 and saved["steps"] == 4 and saved["metrics"]["score"] == cell["score"]


def test_results_doc_copies_the_tables_runs_wrote_and_refuses_unfinished_runs(tmp_path):
    from maskpolicy.benchmarks.results_doc import main as results_doc
    from maskpolicy.policies.errors import DataError

    run = tmp_path / "run"
    run.mkdir()
    (run / "table.md").write_text("# synthetic\n\ntitle\n\n| policy | x |\n|---|---|\n| random | 0.040 |\n\n`cmd`: 5 s on m\n")
    (run / "results.json").write_text(json.dumps({"date": "2026-11-24", "machine": "2 CPU cores"}))
    out = tmp_path / "RESULTS.md"
    results_doc([str(run), "--out", str(out)])
    text = out.read_text()
    assert "## synthetic" in text and "| random | 0.040 |" in text and "*2026-11-24, 2 CPU cores*" in text
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "table.md").write_text("# x\n")
    with pytest.raises(DataError, match="not a finished suite run"):
        results_doc([str(run), str(tmp_path / "half"), "--out", str(tmp_path / "other.md")])
    assert not (tmp_path / "other.md").exists()

    # A suite not re-run keeps its section; a new run adds its own after it.
    quick = tmp_path / "quick"
    quick.mkdir()
    (quick / "table.md").write_text("# real --quick\n\ntitle\n\n| policy | mr |\n|---|---|\n| random | 0.639 |\n")
    (quick / "results.json").write_text(json.dumps({"date": "2026-11-25", "machine": "m"}))
    results_doc([str(quick), "--keep", "synthetic", "--out", str(out)])
    text = out.read_text()
    assert text.index("## synthetic") < text.index("## real --quick")
    assert "| random | 0.040 |" in text and "| random | 0.639 |" in text
    with pytest.raises(SystemExit, match="no section 'perf'"):
        results_doc(["--keep", "perf", "--out", str(out)])


def test_a_policy_relearned_into_the_same_directory_makes_its_cells_stale(tmp_path):
    from maskpolicy.benchmarks.cells import pretrain_cell
    from maskpolicy.policies import LearnedPolicy
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task

    tokenizer = tokenizer_for_task(get_task(TASK, **WORLD["task_options"]), vocab_size=WORLD["vocab_size"])
    policy_dir = str(tmp_path / "policy")
    torch.manual_seed(0)
    LearnedPolicy(tokenizer).save_pretrained(policy_dir, tokenizer=tokenizer)
    spec = _spec(seeds=(0,), policies=("random",))
    config = pretrain_config(spec, str(tmp_path), TASK, "learned", policy_dir, 0)
    assert not pretrain_cell(config)["reused"]
    assert pretrain_cell(config)["reused"]  # same files: read back
    torch.manual_seed(1)
    LearnedPolicy(tokenizer).save_pretrained(policy_dir, tokenizer=tokenizer)  # other weights, same path
    assert not pretrain_cell(config)["reused"]


def test_a_start_model_retrained_into_the_same_directory_makes_learn_and_pretrain_cells_stale(tmp_path):
    """The real suite's general model lives at one path; re-training it (other steps) must
    redo every cell that started from it or learned a policy with it."""
    from maskpolicy.benchmarks.cells import baseline_cell, learn_cell, learn_config, pretrain_cell
    from maskpolicy.train.models import preset_model
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task

    tokenizer = tokenizer_for_task(get_task(TASK, **WORLD["task_options"]), vocab_size=WORLD["vocab_size"])
    model_dir = str(tmp_path / "general")

    def save_model(seed):
        torch.manual_seed(seed)
        preset_model("tiny", len(tokenizer), 32, tokenizer.pad_token_id).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)

    save_model(0)
    spec = _spec(seeds=(0,), policies=("random",))
    spec.pretrain_options["model"] = model_dir
    config = pretrain_config(spec, str(tmp_path), TASK, "random", "random", 0)
    base = pretrain_config(spec, str(tmp_path), TASK, "none", "random", 0)
    learn = learn_config(TASK, "supervised", 0, str(tmp_path), {**WORLD, "model": model_dir, "supervised": {"epochs": 1},
                                                                 "validate": {"steps": 4}})
    cells = ((pretrain_cell, config), (baseline_cell, base), (learn_cell, learn))
    assert not any(run(c)["reused"] for run, c in cells)
    assert all(run(c)["reused"] for run, c in cells)
    save_model(1)  # other weights, same path and same configs
    assert not any(run(c)["reused"] for run, c in cells)


def test_reach_uses_the_chosen_curve_and_its_own_final_point():
    """Classification curves are fine-tuned probes (a cheaper fine-tuning than the final
    score): the target is random's last probe, not its final fine-tuned accuracy."""
    def probed(policy, probes, final):
        return {"task": "t", "policy": policy, "seed": 0, "status": "done", "steps": 100, "score": final,
                "history": [{"step": s, "score": 0.1, **({"probe_accuracy": p} if p is not None else {})}
                            for s, p in probes]}

    grid = {"cells": [probed("random", [(50, None), (100, 0.60)], final=0.75),
                      probed("learned", [(50, 0.62), (100, 0.70)], final=0.74)]}
    assert mean_curve(grid["cells"][1:], "probe_accuracy")[0] == [50, 100]
    assert reach_fraction(grid, "t", "learned", key="probe_accuracy")["text"] == "<= 0.50"
    assert reach_fraction(grid, "t", "learned", key="probe_accuracy")["target"] == pytest.approx(0.60)
    grid["cells"][1]["history"][0]["probe_accuracy"] = 0.55
    assert reach_fraction(grid, "t", "learned", key="probe_accuracy")["text"] == "1.00"
    flat = {"cells": [_cell("random", 0, [(50, 0.0), (100, 0.0)]), _cell("learned", 0, [(50, 0.0), (100, 0.3)])]}
    assert reach_fraction(flat, "t", "learned")["text"] == "n/a (random flat)"  # reaching 0 says nothing


def test_bench_command_writes_the_flags_given_in_order_and_omits_defaults():
    from maskpolicy.benchmarks.report import bench_command

    assert (bench_command("maskpolicy bench --suite real", "quick", "runs/q", seeds=None, steps=200,
                          transfer_seeds=2, data_dir="../d")
            == "maskpolicy bench --suite real --quick --steps 200 --transfer-seeds 2 --data-dir ../d --out runs/q")
    assert bench_command("maskpolicy bench --suite synthetic", "gpu", "o") == "maskpolicy bench --suite synthetic --preset gpu --out o"
    assert (bench_command("maskpolicy bench --suite real", "full", "o", seeds=3, no_seq2seq=True)
            == "maskpolicy bench --suite real --seeds 3 --no-seq2seq --out o")  # a switch: no value after it
    assert bench_command("maskpolicy bench --suite real", "full", "o", no_seq2seq=False) == "maskpolicy bench --suite real --out o"


def test_quickstart_records_the_command_that_reproduces_it(tmp_path):
    out = tmp_path / "qs"
    report = run_suite("quickstart", policies=["random", "salient_span"], steps=4, seed=1, out=str(out), progress=False)
    assert [r["policy"] for r in report["rows"]] == ["random", "salient_span"]
    command = json.loads((out / "results.json").read_text())["command"]
    assert command == f"maskpolicy bench --suite quickstart --policies random,salient_span --steps 4 --seed 1 --out {out}"
    assert f"`{command}`" in (out / "table.md").read_text()


def test_cells_written_before_an_option_existed_stay_valid():
    """A learn cell recorded before ``classifier.max_train_examples`` existed compares equal
    to the same cell with the option at its default (None), and unequal with a value."""
    from maskpolicy.benchmarks.cells import _comparable

    old = {"task": "mr", "supervised": {"classifier": {"epochs": 2, "learning_rate": 1e-4}}, "progress": True}
    new = {"task": "mr", "supervised": {"classifier": {"epochs": 2, "learning_rate": 1e-4, "max_train_examples": None}}}
    assert _comparable(old) == _comparable(new)
    new["supervised"]["classifier"]["max_train_examples"] = 3000
    assert _comparable(old) != _comparable(new)


def test_classifier_uses_only_the_first_examples(tokenizer):
    from maskpolicy.meta.selective import ClassifierConfig, fit_classifier
    from maskpolicy.tasks.base import LabeledText

    examples = [LabeledText("a b c", 0), LabeledText("d e f", 1)] + [LabeledText("x y", 9)] * 5  # label 9: out of range
    fit_classifier(tokenizer, examples, 2, ClassifierConfig(epochs=1, max_train_examples=2), max_length=16)
    with pytest.raises(IndexError, match="out of bounds"):
        fit_classifier(tokenizer, examples, 2, ClassifierConfig(epochs=1), max_length=16)  # reaches label 9


def test_removed_options_do_not_make_cells_stale():
    from maskpolicy.benchmarks.cells import _comparable

    old = {"task": "mr", "mask": {"tau": 0.01, "head_learning_rate": 1e-3}}
    assert _comparable(old) == _comparable({"task": "mr", "mask": {"tau": 0.01}})
    assert _comparable(old) != _comparable({"task": "mr", "mask": {"tau": 0.02}})


def test_a_changed_evaluation_option_evaluates_the_saved_model_again(tmp_path):
    """Only ``qa`` (or ``finetune``) changed: the cell is not trained again, its saved model is
    evaluated with the new option, and the numbers equal those of a run trained from scratch
    with that option (the final evaluation is deterministic for a seed)."""
    from maskpolicy.benchmarks.cells import pretrain_cell
    from maskpolicy.train.config import PretrainConfig

    def config(out, epochs):
        return PretrainConfig(task="synthetic:birthplace", task_options={"num_entities": 24}, vocab_size=400,
                              max_length=32, arch="seq2seq", model="tiny", policy="salient_span", steps=6,
                              batch_size=8, eval_every=3, save_every=6, progress=False, out=str(tmp_path / out),
                              qa={"epochs": epochs, "num_beams": 2})

    first = pretrain_cell(config("a", 1))
    again = pretrain_cell(config("a", 3))
    assert not again["reused"] and again["reevaluated"] == ["qa"]
    assert again["history"] == first["history"] and again["train_seconds"] == first["train_seconds"]  # not retrained
    assert again["config"]["qa"]["epochs"] == 3
    assert pretrain_cell(config("a", 3))["reused"]  # now read back as it is
    fresh = pretrain_cell(config("b", 3))
    assert {k: v for k, v in fresh["metrics"].items()} == again["metrics"]
    # A training option changed: trained again.
    changed = dataclasses.replace(config("a", 3), steps=4)
    assert pretrain_cell(changed)["steps"] == 4
