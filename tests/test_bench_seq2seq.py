"""The synthetic suite's seq2seq section at toy sizes: both formats, every row, the learned
policies (meta through the seq2seq inner model), the paired tables and the format costs."""
from __future__ import annotations

import json

from maskpolicy.benchmarks.seq2seq_section import (OUTPUTS, SEQ2SEQ_POLICIES, format_costs, run_seq2seq,
                                                   run_seq2seq_suite)

WORLD = {"task_options": {"num_entities": 24}, "vocab_size": 400, "max_length": 32}


def test_format_costs_measure_both_formats_side_by_side():
    rows = format_costs("synthetic:birthplace", {"task_options": {"num_entities": 24}, "max_length": 32}, steps=3,
                        seed=0, batch_size=8)
    assert [r["output"] for r in rows] == list(OUTPUTS)
    spans, full = rows
    # The same masks: the encoder input is identical, the full target is the whole passage.
    assert spans["encoder tokens / row"] == full["encoder tokens / row"]
    assert full["_decoder"] > 2 * spans["_decoder"]
    assert spans["s / step vs spans"] == "1.00" and all(r["_seconds"] > 0 for r in rows)


def test_seq2seq_section(tmp_path):
    task = "synthetic:birthplace"
    pretrain = {**WORLD, "batch_size": 4, "qa": {"epochs": 1}}
    learn = {**WORLD, "validate": {"enabled": False}, "lm_warmup_steps": 2, "supervised": {"epochs": 1},
             "progress": False, "meta": {"outer_batch": 4, "meta_steps": 2}}
    report = run_seq2seq(str(tmp_path), tasks=[task], seeds=[0], steps=4, pretrain_options=pretrain,
                         learn_options=learn, workers=1, cost_steps=2)
    table = "\n".join(f"## {heading}\n{body}" for heading, body in report["sections"])
    for heading in ("Seq2seq (BART tiny): closed-book QA exact match", "Seq2seq: full - spans per policy",
                    "Seq2seq, output spans: paired difference", "Seq2seq, output full: paired difference",
                    "Seq2seq: learned policies' answer recall", "Seq2seq: steps to reach",
                    "Seq2seq: cost of each output format", "Seq2seq, output spans: what the masks cover",
                    "Seq2seq, output full: what the masks cover"):
        assert heading in table, heading
    # What the masks cover: salient_span masks the answers (names of the world), random ~15% of them.
    cover = table.split("output spans: what the masks cover")[1].split("##")[0]
    salient = [float(v) for v in cover.split("| salient_span |")[1].split("\n")[0].split("|")[:4]]
    randoms = [float(v) for v in cover.split("| random |")[1].split("\n")[0].split("|")[:4]]
    assert salient[0] > 0.5 and 0.05 < randoms[0] < 0.3 and "failed" not in cover, cover
    main = table.split("closed-book QA exact match")[1].split("##")[0]
    assert all(f"| {p} |" in main for p in SEQ2SEQ_POLICIES)
    for output in OUTPUTS:
        cells = report["grids"][output]["cells"]
        assert len(cells) == len(SEQ2SEQ_POLICIES) and all(c["status"] == "done" for c in cells), cells
        trained = [c for c in cells if c["policy"] != "none"]
        assert all(c["config"]["arch"] == "seq2seq" and c["config"]["output"] == output for c in trained)
        assert all("qa_em" in c["metrics"] and "qa_em_beam" in c["metrics"] for c in cells)
        assert all("cloze_em" in h for c in trained for h in c["history"])  # the compute curve's points
        meta = report["grids"][output]["learned"]["meta"]
        assert all(m["status"] == "done" for m in meta.values())
        assert meta[f"{task} seed 0"]["policy"].startswith(str(tmp_path / "seq2seq" / output))
    assert sorted(p.split("/")[-1] for p in report["png"]) == ["curves_synthetic_birthplace.png"] * 2
    # The suite on its own (maskpolicy bench --suite seq2seq) reads the same cells back.
    suite = run_seq2seq_suite(str(tmp_path), preset="quick", seeds=1, steps=4, workers=1,
                              sizes={"pretrain_options": pretrain, "learn_options": learn, "meta_steps": 2,
                                     "cost_steps": 2})
    for output in OUTPUTS:
        assert [c["score"] for c in suite["grids"][output]["cells"]] == [c["score"] for c in report["grids"][output]["cells"]]
    text = (tmp_path / "table.md").read_text()
    assert text.startswith("# seq2seq --quick") and "| learned-meta |" in text and "cost of each output format" in text
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["formats"]) == set(OUTPUTS) and len(results["costs"]) == 2
    assert "--suite seq2seq --quick --seeds 1 --steps 4" in text
