"""Benchmark suites behind ``maskpolicy bench``.

``quickstart`` (the README's main job): intermediate pre-training of a ``tiny`` BERT on the
built-in synthetic world with each heuristic policy at equal compute (same steps, batch,
mask budget and seed), then closed-book cloze exact match on the *evaluation* entities.
Finished cells are read back from their ``results.json`` instead of being re-run.
"""
from __future__ import annotations

import os
import time

from policies.errors import ConfigError
from train.checkpoint import write_json_atomic
from train.config import PretrainConfig

from .cells import pretrain_cell
from .tables import markdown_table, write_text

SUITES = {
    "quickstart": dict(
        task="synthetic:birthplace",
        policies=["random", "whole_word", "span", "pmi", "salient_span"],
        steps=2000,
        quick_steps=1000,
    ),
}


def run_suite(suite: str = "quickstart", *, policies: list[str] | None = None, task: str | None = None,
              steps: int | None = None, seed: int = 0, quick: bool = False, out: str | None = None,
              progress: bool = True) -> dict:
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    spec = SUITES[suite]
    task = task or spec["task"]
    policies = policies or spec["policies"]
    steps = steps or (spec["quick_steps"] if quick else spec["steps"])
    out = out or os.path.join("runs", suite)
    rows, failures, started = [], [], time.perf_counter()
    for policy in policies:
        config = PretrainConfig(task=task, policy=policy, steps=steps, seed=seed, out=os.path.join(out, policy),
                                eval_every=max(steps // 4, 1), save_every=steps, progress=progress)
        result = pretrain_cell(config)
        if result["status"] != "done":  # recorded in the cell's failed.json; the table goes on
            failures.append({"cell": policy, "error": result["error"]})
            rows.append({"policy": policy, "cloze EM (eval entities)": "failed", "cloze EM (train entities)": "failed",
                         "train s": ""})
            continue
        m = result["metrics"]
        rows.append({
            "policy": policy,
            "cloze EM (eval entities)": f"{m['cloze_em']:.3f}",
            "cloze EM (train entities)": f"{m.get('cloze_em_train', float('nan')):.3f}",
            "train s": f"{result['train_seconds']:.0f}",
        })
    header = ["policy", "cloze EM (eval entities)", "cloze EM (train entities)", "train s"]
    table = (f"{task}, tiny BERT from scratch, {steps} intermediate steps, batch 32, mask rate 0.15, seed {seed}\n\n"
             + markdown_table(rows, header))
    write_text(out, "table.md", table + "\n")
    write_json_atomic(os.path.join(out, "results.json"), {"suite": suite, "task": task, "steps": steps, "seed": seed,
                                                         "rows": rows, "failures": failures, "wall_seconds": round(time.perf_counter() - started, 1)})
    if failures:
        table += "\n\nfailed cells:\n" + "\n".join(f"- {f['cell']}: {f['error']}" for f in failures)
    return {"table": table, "rows": rows, "failures": failures, "out": out}
