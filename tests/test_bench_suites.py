"""The synthetic and real suites end to end at toy sizes: every output file, every section."""
from __future__ import annotations

import csv
import io
import json

import pytest

from maskpolicy.benchmarks.suites import run_suite
from maskpolicy.benchmarks.real_suite import run_real
from maskpolicy.benchmarks.synthetic_suite import run_synthetic
from maskpolicy.policies.errors import DataError

from realdata import larger_squad, write_mini_data

WORLD = {"task_options": {"num_entities": 24}, "vocab_size": 400, "max_length": 32}


def test_synthetic_suite_writes_tables_results_and_plots(tmp_path):
    tasks = ["synthetic:birthplace", "synthetic:colour"]
    sizes = dict(tasks=tasks, policies=["none", "random", "salient_span", "learned-supervised", "learned-meta"],
                 meta_steps=2, pretrain_options={**WORLD, "batch_size": 4},
                 learn_options={**WORLD, "validate": {"steps": 4}, "lm_warmup_steps": 2, "supervised": {"epochs": 1}, "meta": {"outer_batch": 4}})
    report = run_synthetic(str(tmp_path), seeds=2, steps=4, workers=1, transfer_seeds=2,
                           sizes={**sizes, "dense": True, "fill_compare": True, "seq2seq_tasks": []})
    table = (tmp_path / "table.md").read_text()
    assert report["table"] == table
    for heading in ("Steps to reach random", "Learned policies: answer recall", "Transfer", "Dense world (3 facts",
                    "Dense world: what the masks cover", "Budget filling: cloze EM by fill mode"):
        assert heading in table
    masks = table.split("what the masks cover")[1].split("##")[0]
    share = {line.split("|")[1].strip(): float(line.split("|")[2].split()[0]) for line in masks.splitlines()
             if line.startswith("| ") and not line.startswith("| policy")}
    assert share["salient_span"] > share["random"] + 0.3  # the oracle masks the answers, random 15% of them
    fills = table.split("by fill mode")[1].split("##")[0]
    assert fills.count("| dense |") == 3 and fills.count("| built-in |") == 3 and "failed" not in fills
    assert "--seeds 2 --steps 4 --transfer-seeds 2" in table and "s on " in table  # the exact command and its wall time
    transfer = table.split("## Transfer")[1]
    assert "seeds 0, 1" in transfer and "| random | " in transfer and " ± " in transfer  # transfer over both seeds
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert [r["policy"] for r in rows] == sizes["policies"]
    assert all(" ± " in r[t] for r in rows for t in tasks)  # two seeds: mean ± std everywhere
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["suite"] == "synthetic" and results["wall_seconds"] > 0
    cells = results["cells"]
    assert len(cells) == len(tasks) * len(sizes["policies"]) * 2
    assert len(results["dense"]["cells"]) == 5 * 2 and all(c["status"] == "done" for c in results["dense"]["cells"])
    assert {(c["seed"], c["steps"]) for c in cells} == {(0, 4), (1, 4)}
    assert all(c["status"] == "done" and "config" in c for c in cells)
    assert set(results["transfer"]["scores"]) == {f"{s} -> {t}" for s in tasks + ["random"] for t in tasks}
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert {"curves_synthetic_birthplace.png", "curves_synthetic_colour.png", "transfer.png"} <= pngs


def test_real_suite_on_a_miniature_data_directory(tmp_path):
    data = write_mini_data(tmp_path / "data", squad=larger_squad())
    sizes = dict(general_steps=3, steps=4, batch_size=4, corpus_cap=None, tasks=["mr", "squad"],
                 policies=["none", "random", "selective", "learned-supervised"],
                 squad_policies=["random", "learned-supervised"],
                 finetune={"epochs": 1, "batch_size": 8}, classifier={"epochs": 1}, selective={"max_examples": 12},
                 probe={"epochs": 1, "batch_size": 8, "max_train_examples": 16}, probe_points=2, model="mini", transfer_seeds=1,
                 squad_seq2seq=["random"], qa={"epochs": 1, "num_beams": 2}, squad_validate={"steps": 4})
    out = tmp_path / "out"
    run_real(str(out), data_dir=str(data), seeds=1, workers=1, sizes=sizes)
    rows = {r["policy"]: r for r in csv.DictReader(io.StringIO((out / "table.csv").read_text()))}
    assert set(rows) == {"none", "random", "selective", "learned-supervised"}
    for policy in ("none", "random", "selective", "learned-supervised"):
        assert 0.0 <= float(rows[policy]["mr"]) <= 1.0  # fine-tuned accuracy
    assert rows["selective"]["squad"] == "-" and rows["none"]["squad"] == "-"  # not run for squad
    assert 0.0 <= float(rows["learned-supervised"]["squad"]) <= 1.0
    table = (out / "table.md").read_text()
    assert "from a configuration" in table and "General pre-training: WikiText-2" in table
    assert "mini BERT (4 x 256) from a configuration, general-pre-trained" in table  # the preset's model size reaches the runs
    assert "| squad | supervised |" in table and "| mr | supervised |" in table
    # SQuAD by generation: a general BART with the same tokenizer, both output formats.
    assert "## SQuAD seq2seq (BART tiny): closed-book QA exact match" in table and "BART tiny general-pre-trained" in table
    assert "## SQuAD seq2seq: full - spans per policy" in table
    results = json.loads((out / "results.json").read_text())
    for output in ("spans", "full"):
        s2s = results["seq2seq"]["formats"][output]["cells"]
        assert {c["policy"] for c in s2s} == {"random"} and all(c["status"] == "done" for c in s2s)
        assert all(c["config"]["model"].endswith("wikitext2-bart/model") and "qa_em" in c["metrics"] for c in s2s)
    selective = [c for c in results["cells"] if c["policy"] == "selective"][0]
    assert selective["config"]["masking"]["fill_zero"] is False  # Train No Evil: only important tokens
    for cell in results["cells"]:  # downstream curve: fine-tuned probes at 2 of the 4 steps, MR only
        probes = [h["step"] for h in cell.get("history", []) if "probe_accuracy" in h]
        trained = cell["task"] == "mr" and cell["policy"] != "none"
        assert probes == ([2, 4] if trained else []), (cell["task"], cell["policy"], probes)
    # Transfer: MR's policy drives SQuAD's pre-training and vice versa, each target with its own options.
    assert set(results["transfer"]["scores"]) == {f"{s} -> {t}" for s in ("mr", "squad", "random") for t in ("mr", "squad")}
    assert not results["transfer"]["failures"]
    cross = json.loads((out / "pretrain" / "squad" / "learned-supervised-mr" / "seed0" / "results.json").read_text())
    assert cross["config"]["max_length"] == 128 and cross["config"]["probe_every"] == 0  # squad's options
    assert "## Transfer (supervised policies" in table and (out / "transfer.png").is_file()
    reach = table.split("## Steps to reach random's final score")[1].split("## ")[0]
    assert "| learned-supervised |" in reach and "| policy | mr | squad |" in reach
    general = out / "general" / "wikitext2" / "model"
    assert all(c["config"]["model"] == str(general) for c in results["cells"] if c["status"] == "done")


def test_real_suite_names_the_missing_files_before_running_anything(tmp_path):
    data = write_mini_data(tmp_path / "data")
    (data / "mr" / "rt-polarity.neg").unlink()
    (data / "wikitext2" / "test.txt").unlink()
    with pytest.raises(DataError, match="rt-polarity.neg") as err:
        run_suite("real", out=str(tmp_path / "out"), data_dir=str(data), quick=True)
    assert "wikitext2/test.txt" in str(err.value)  # every task's problems in one error, not only the first
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="data directory"):
        run_suite("real", out=str(tmp_path / "out"), data_dir=str(tmp_path / "nowhere"), quick=True)


def test_perf_suite_reports_every_ratio_against_its_reference(tmp_path):
    from maskpolicy.benchmarks.perf_suite import run_perf

    sizes = dict(collator_batches=2, train_repeats=1, pretrain_steps=2, pretrain_rounds=1, train_model="tiny", train_length=16,
                 baseline_scaling=False,  # the torchrun part has its own test (test_trainer_baseline.py)
                 meta_args=["--repeats", "1", "--layers", "1", "--hidden", "32", "--batch", "2", "--length", "16",
                            "--outer-batch", "2", "--outer-length", "8"])
    report = run_perf(str(tmp_path), sizes=sizes)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    measures = {r["measure"].split(",")[0] for r in rows}
    assert measures == {"collator", "training step", "meta-step", "intermediate pre-training"}
    for row in rows:  # each reference row has ratio 1 exactly; every other ratio is a positive number
        assert float(row["ratio"]) > 0
    assert {r["variant"] for r in rows if r["measure"].startswith("meta-step")} == {"plain", "plain*", "func", "higher", "fd"}
    assert [r["ratio"] for r in rows if r["variant"] in ("policy random", "random") ] == ["1.000", "1.00"]
    assert "fd against the exact hypergradient" in report["table"]


def test_no_seq2seq_skips_the_bart_section_and_says_so_in_the_command(tmp_path):
    sizes = dict(tasks=["synthetic:birthplace"], policies=["none", "random"], meta_steps=2, dense=False,
                 pretrain_options={**WORLD, "batch_size": 4},
                 learn_options={**WORLD, "validate": {"steps": 4}, "lm_warmup_steps": 2, "meta": {"outer_batch": 4}},
                 seq2seq_tasks=["synthetic:birthplace"], seq2seq_steps=2)
    report = run_synthetic(str(tmp_path), seeds=1, steps=2, workers=1, sizes=sizes, seq2seq=False, transfer_seeds=0)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seq2seq"]["formats"] == {} and "Seq2seq" not in report["table"]
    assert not (tmp_path / "seq2seq").exists()  # no BART cell was trained
    assert results["command"].endswith(f"--steps 2 --transfer-seeds 0 --no-seq2seq --out {tmp_path}")
    assert "## Transfer" not in report["table"] and not (tmp_path / "transfer").exists()  # --transfer-seeds 0: none


def test_no_seq2seq_is_refused_for_suites_without_that_section(tmp_path):
    from maskpolicy.cli import main

    assert main(["bench", "--suite", "perf", "--quick", "--no-seq2seq", "--out", str(tmp_path / "p")]) == 2
    assert not (tmp_path / "p").exists()
