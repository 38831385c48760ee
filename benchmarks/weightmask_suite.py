"""The ``weightmask`` suite: weight masking against fine-tuning and a linear probe.

For each start (a base model) and task, three methods at the same epochs and data
(``train/methods.py``): ``head`` (frozen body, trained head), ``full`` (every weight) and
``mask`` (frozen weights, a learned binary mask + trained head), over seeds; mean ± std,
and paired differences (same seed: same head initialisation and data order) of ``mask``
to ``full`` and to ``head`` with 95% t-intervals (``paired.py``).

Starts:
- ``wikitext2-tiny``: the project's own 2 x 128 BERT pre-trained on WikiText-2 (as the
  real suite's general stage) - MR and SST-2;
- ``minilm-l6``: the offline pretrained all-MiniLM-L6-v2 when installed - MR and SST-2;
- ``synthetic``: a tiny BERT pre-trained on the synthetic world with ``salient_span``
  masking - the closed-book cloze task ``synthetic:birthplace``, answered through the MLM
  head. (Cloze needs a start that holds the facts asked about: from the WikiText-2 models
  every method scores about 0 on any cloze task, which would compare nothing.)

Beside the tables (``weightmask_costs.py``): bytes stored per task, the serving memory of
N = 1, 2, 4, 8 tasks on one base against N fine-tuned copies, the step time of masking
against fine-tuning measured side by side, and accuracy along the line from the masked to
the fine-tuned model (11 points, seed 0; a PNG per start and task).
"""
from __future__ import annotations

import os
import time

from maskpolicy.policies.errors import ArtifactError
from maskpolicy.train.config import PretrainConfig
from maskpolicy.train.finetune_run import FinetuneRunConfig
from maskpolicy.train.sources import source_dir

from .cells import pretrain_cell, run_cells
from .paired import format_diff, paired_difference
from .report import bench_command, write_suite
from .tables import fmt, markdown_table

METHODS = ["head", "full", "mask"]
MAX_WORDS = 30
# Learning rates: full fine-tuning as the real suite (5e-4 for the tiny model from a
# configuration, 1e-4 for the pretrained encoder); heads at 1e-3; scores at 1e-4 by the
# scan in the README (weight masking section: MR, one seed, minilm-l6 3,000 sentences x 2
# epochs: 1e-4 0.805, 3e-4 0.781, 1e-3 and 5e-3 collapse to one class; tiny: 0.57 alike).
# Sizes: about 1 h with 2 workers on 2 CPU cores (a minilm-l6 cell about 4 min).
FULL = dict(seeds=3, general_steps=6000, synthetic_steps=2000, serving=[1, 2, 4, 8], timing_steps=20,
            starts={
                "wikitext2-tiny": dict(tasks=["mr", "sst2"], epochs=3, learning_rate=5e-4, max_train_examples=None),
                "minilm-l6": dict(tasks=["mr", "sst2"], epochs=2, learning_rate=1e-4, max_train_examples=2000),
                "synthetic": dict(tasks=["synthetic:birthplace"], epochs=5, learning_rate=5e-4, max_train_examples=None),
            },
            mask=dict(score_learning_rate=1e-4), head_learning_rate=1e-3)
QUICK = {**FULL, "seeds": 1, "general_steps": 600, "synthetic_steps": 600, "serving": [1, 2, 4], "timing_steps": 5,
         "starts": {"wikitext2-tiny": dict(tasks=["mr"], epochs=1, learning_rate=5e-4, max_train_examples=2000),
                    "synthetic": dict(tasks=["synthetic:birthplace"], epochs=3, learning_rate=5e-4,
                                      max_train_examples=None)}}
PRESETS = {"full": FULL, "quick": QUICK}


def start_models(out: str, size: dict, data_dir: str | None) -> dict[str, str]:
    """The base model of every start (trained or read back); a start that cannot be had
    (minilm-l6 not installed) is left out and said so in the table."""
    models, jobs = {}, []
    if "wikitext2-tiny" in size["starts"]:
        jobs.append(("wikitext2-tiny", PretrainConfig(
            task="wikitext2", data_dir=data_dir, policy="random", model="tiny", steps=size["general_steps"], seed=0,
            max_length=128, task_options={"max_words": MAX_WORDS}, eval_every=max(size["general_steps"] // 10, 1),
            save_every=size["general_steps"], progress=False, out=os.path.join(out, "general", "wikitext2-tiny"))))
    if "synthetic" in size["starts"]:
        jobs.append(("synthetic", PretrainConfig(
            task="synthetic:birthplace", policy="salient_span", model="tiny", steps=size["synthetic_steps"], seed=0,
            eval_every=max(size["synthetic_steps"] // 4, 1), save_every=size["synthetic_steps"], progress=False,
            out=os.path.join(out, "general", "synthetic"))))
    cells = run_cells([("pretrain", config) for _, config in jobs], workers=min(2, len(jobs)))
    for (name, config), cell in zip(jobs, cells):
        if cell["status"] != "done":
            raise ArtifactError(f"the {name} start could not be trained: {cell['error']}")
        models[name] = os.path.join(config.out, "model")
    if "minilm-l6" in size["starts"]:
        try:
            source_dir("minilm-l6")
            models["minilm-l6"] = "minilm-l6"
        except ArtifactError:
            pass  # not installed: its rows say so
    return models


def cell_config(out: str, start: str, model: str, task: str, method: str, seed: int, size: dict,
                data_dir: str | None) -> FinetuneRunConfig:
    spec = size["starts"][start]
    task_options = {"max_words": MAX_WORDS} if task in ("mr", "sst2") else {}
    return FinetuneRunConfig(
        task=task, model=model, method=method, seed=seed, epochs=spec["epochs"], learning_rate=spec["learning_rate"],
        head_learning_rate=size["head_learning_rate"], max_train_examples=spec["max_train_examples"],
        mask=dict(size["mask"]), data_dir=data_dir if task in ("mr", "sst2") else None, task_options=task_options,
        progress=False, out=os.path.join(out, "cells", start, task.replace(":", "_"), method, f"seed{seed}"))


def run_weightmask(out: str, *, preset: str = "full", seeds: int | None = None, workers: int = 2,
                   data_dir: str | None = None, sizes: dict | None = None) -> dict:
    from .real_suite import check_data
    from .weightmask_costs import interpolation_rows, serving_rows, step_time_rows

    started = time.perf_counter()
    size = {**PRESETS[preset], **(sizes or {})}
    seed_list = list(range(seeds or size["seeds"]))
    real = sorted({t for spec in size["starts"].values() for t in spec["tasks"] if t in ("mr", "sst2")})
    root = check_data(data_dir, real) if real else None
    models = start_models(out, size, root)
    keys = [(start, task, method, seed) for start in size["starts"] if start in models
            for task in size["starts"][start]["tasks"] for method in METHODS for seed in seed_list]
    configs = [cell_config(out, s, models[s], t, m, k, size, root) for s, t, m, k in keys]
    cells = dict(zip(keys, run_cells([("finetune", c) for c in configs], workers=workers)))
    rows, pairs, stored = result_rows(cells, size, models, seed_list)
    interpolation, plots = interpolation_rows(cells, size, models, out)
    serving = serving_rows(cells, size, models)
    timing = step_time_rows(size, models, root)
    missing = [s for s in size["starts"] if s not in models]
    title = ("Weight masking (a learned binary mask over the frozen weights, Zhao et al. 2020) against full "
             "fine-tuning and a trained head on a frozen body (`head`), same epochs and data per start; score = "
             "accuracy (MR, SST-2) or closed-book cloze exact match (synthetic:birthplace), mean ± std over "
             f"{len(seed_list)} seed(s)." + (f" Not run: {', '.join(missing)} (not installed)." if missing else ""))
    sections = [
        ("Paired differences, mean [95% CI] over seeds; * = interval excludes zero; no * = no difference shown",
         "Per seed: `mask`'s score minus `full`'s (or `head`'s) on the same start, task and seed.\n\n"
         + markdown_table(pairs, ["start", "task", "mask - full", "mask - head"])),
        ("Bytes stored per task", markdown_table(stored, ["start", "method", "bytes per task", "of which mask",
                                                           "share of one model"])),
        ("Serving N tasks from one base (bytes of tensors held)", markdown_table(serving, [
            "start", "N", "bank bytes", "bank / one model", "N fine-tuned copies / one model", "bound 1 + 0.05 N"])),
        ("Step time, masking against fine-tuning (measured side by side, same batches)",
         markdown_table(timing, ["start", "full s/step", "mask s/step", "head s/step", "mask / full"])),
        ("Accuracy from the masked (alpha 0) to the fine-tuned model (alpha 1), seed 0",
         markdown_table(interpolation, ["start", "task"] + [f"{a / 10:.1f}" for a in range(11)])
         + "".join(f"\n\n![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots)),
    ]
    failures_text = "\n".join(f"- {k}: {c['error']}" for k, c in cells.items() if c["status"] != "done")
    if failures_text:
        sections.append(("Failed cells", failures_text))
    command = bench_command("maskpolicy bench --suite weightmask", preset, out, data_dir=data_dir)
    return write_suite(out, suite="weightmask", title=title, sections=sections, rows=rows,
                       header=["start", "task"] + METHODS, preset=preset, started=started, command=command,
                       results={"cells": {"/".join(map(str, k)): _summary(c) for k, c in cells.items()},
                                "interpolation": interpolation, "serving": serving, "step_time": timing,
                                "stored": stored, "pairs": pairs})


def _summary(cell: dict) -> dict:
    keep = ("status", "error", "metrics", "trainable_parameters", "bytes_stored", "bytes_stored_total",
            "seconds_per_step", "train_seconds", "steps")
    out = {k: cell[k] for k in keep if k in cell}
    if "masked_share" in cell:
        out["masked_share"] = cell["masked_share"]["overall"]
    return out


def _scores(cells: dict, start: str, task: str, method: str, seeds: list[int]) -> dict:
    return {s: cells[(start, task, method, s)]["metrics"]["score"] for s in seeds
            if cells.get((start, task, method, s), {}).get("status") == "done"}


def result_rows(cells: dict, size: dict, models: dict, seeds: list[int]):
    rows, pairs, stored = [], [], []
    for start in (s for s in size["starts"] if s in models):
        for task in size["starts"][start]["tasks"]:
            scores = {m: _scores(cells, start, task, m, seeds) for m in METHODS}
            rows.append({"start": start, "task": task, **{m: fmt(list(scores[m].values())) if scores[m] else "failed"
                                                          for m in METHODS}})
            pairs.append({"start": start, "task": task,
                          "mask - full": format_diff(paired_difference(scores["mask"], scores["full"])),
                          "mask - head": format_diff(paired_difference(scores["mask"], scores["head"]))})
        task = size["starts"][start]["tasks"][0]
        full = cells.get((start, task, "full", seeds[0]), {})
        for method in METHODS:
            cell = cells.get((start, task, method, seeds[0]), {})
            if cell.get("status") != "done":
                continue
            total = cell["bytes_stored_total"]
            mask = (cell.get("bytes_stored") or {}).get("mask.safetensors", 0)
            share = f"{total / full['bytes_stored_total']:.4f}" if full.get("status") == "done" else "-"
            stored.append({"start": start, "method": method, "bytes per task": f"{total:,}",
                           "of which mask": f"{mask:,}" if mask else "-", "share of one model": share})
    return rows, pairs, stored
