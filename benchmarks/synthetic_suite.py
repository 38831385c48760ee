"""The ``synthetic`` suite: every relation of the built-in world, full policy grid, compute
curves and the transfer matrix.

Sizes (2 CPU cores, two one-thread workers):

- full:  4 relations x 9 grid rows x 3 seeds, 1,000 intermediate steps per cell, 20
         evaluations per run; policies learned per (relation, seed), each validated
         downstream; 4 x 4 transfer on the first seed; the dense world and the fill
         comparison (``dense_world.py``); the seq2seq section (``seq2seq_section.py``: BART tiny,
         both output formats x 6 rows x 3 seeds, 1,500 steps, on birthplace). 57 min from an
         empty directory without the seq2seq section.
- quick: 2 relations (birthplace, profession), 6 rows, 1 seed, 400 steps, 150 meta-steps;
         2 x 2 transfer; the dense world without the fill comparison; seq2seq at 400 steps.
- gpu:   (``--preset gpu``) the full grid with 5 seeds, 2,000 steps per cell, 600
         meta-steps, transfer on every seed. Defined for a GPU; not yet run.

Model: ``tiny`` BERT (2 x 128) from a configuration, no general pre-training (the world's
facts exist only in its corpus). Score: closed-book cloze exact match on the evaluation
entities, whose questions no policy ever sees. Below the main table (and the dense world's):
each row's paired difference to ``random`` per relation (same seed, same data order), mean
with a 95% interval over seeds (``paired.py``).
"""
from __future__ import annotations

import time

from .dense_world import run_dense
from .grid import GRID_POLICIES, GridSpec, grid_rows, run_grid
from .paired import compare_to_random
from .seq2seq_section import records as seq2seq_records
from .seq2seq_section import run_seq2seq
from .report import bench_command, curve_plots, failure_lines, reach_rows, write_suite
from .tables import fmt, markdown_table
from .transfer import check_transfer_seeds, run_transfer

RELATIONS = ["synthetic:birthplace", "synthetic:profession", "synthetic:colour", "synthetic:employer"]
FULL = dict(tasks=RELATIONS, policies=list(GRID_POLICIES), seeds=3, steps=1000, meta_steps=300, transfer_seeds=1,
            dense=True, fill_compare=True, seq2seq_tasks=RELATIONS[:1], seq2seq_steps=3000)
QUICK = dict(tasks=RELATIONS[:2], policies=["none", "random", "span", "salient_span", "learned-supervised", "learned-meta"],
             seeds=1, steps=400, meta_steps=150, transfer_seeds=1, dense=True, fill_compare=False,
             seq2seq_tasks=RELATIONS[:1], seq2seq_steps=400)
GPU = {**FULL, "seeds": 5, "steps": 2000, "meta_steps": 600, "transfer_seeds": 5, "seq2seq_tasks": RELATIONS,
       "seq2seq_steps": 3000}
PRESETS = {"full": FULL, "quick": QUICK, "gpu": GPU}


def run_synthetic(out: str, *, preset: str = "full", seeds: int | None = None, steps: int | None = None,
                  workers: int = 2, transfer_seeds: int | None = None, sizes: dict | None = None,
                  seq2seq: bool = True, command: str = "maskpolicy bench --suite synthetic") -> dict:
    """``preset``: full | quick | gpu; ``sizes`` overrides entries of it (tests); ``transfer_seeds``:
    the transfer matrix on the first N seeds (default: the preset's); ``seq2seq=False``
    (``--no-seq2seq``) skips the seq2seq section (``--suite seq2seq`` runs it alone)."""
    started = time.perf_counter()
    size = {**PRESETS[preset], **(sizes or {})}
    seed_list = list(range(seeds or size["seeds"]))
    size["transfer_seeds"] = check_transfer_seeds(transfer_seeds, size["transfer_seeds"], seed_list)
    steps = steps or size["steps"]
    learn_options = {**size.get("learn_options", {}), "progress": False}
    learn_options["meta"] = {**learn_options.get("meta", {}), "meta_steps": size["meta_steps"]}
    spec = GridSpec(tasks=size["tasks"], policies=size["policies"], seeds=seed_list, steps=steps,
                    pretrain_options=size.get("pretrain_options", {}), learn_options=learn_options, workers=workers)
    grid = run_grid(spec, out)
    transfer = {"table": None, "png": [], "failures": [], "scores": {}, "rows": []}  # --transfer-seeds 0
    if size["transfer_seeds"]:
        transfer = run_transfer(spec.tasks, root=out, steps=steps, seeds=seed_list[: size["transfer_seeds"]],
                                method="meta", pretrain_options=spec.pretrain_options, learn_options=learn_options,
                                eval_points=spec.eval_points, workers=workers)
    dense = {"sections": [], "grid": None}
    if size.get("dense"):
        dense = run_dense(out, tasks=spec.tasks[:1], seeds=seed_list, steps=steps, learn_options=learn_options,
                          workers=workers, builtin_root=out, builtin_pretrain=spec.pretrain_options,
                          compare_fills=size.get("fill_compare", False))
    bart = {"sections": [], "grids": {}, "costs": [], "png": []}
    if size.get("seq2seq_tasks") and seq2seq:
        bart = run_seq2seq(out, tasks=size["seq2seq_tasks"], seeds=seed_list, steps=size["seq2seq_steps"]
                              if steps == size["steps"] else steps,  # --steps N: every grid runs N
                              pretrain_options=spec.pretrain_options, learn_options=learn_options, workers=workers,
                              cost_steps=size.get("seq2seq_cost_steps", 20))
    pngs = curve_plots(grid, spec, out, "cloze EM") + transfer["png"] + bart["png"]
    rows = grid_rows(grid, spec)
    paired = compare_to_random(grid, spec.tasks, spec.policies)
    recall_rows = _recall_rows(grid, spec)
    sections = paired.section() + [
        ("Steps to reach random's final score (fraction of random's steps)", markdown_table(reach_rows(grid, spec), ["policy"] + spec.tasks)),
        ("Learned policies: answer recall within the 15% budget, evaluation entities", markdown_table(recall_rows, ["method"] + spec.tasks)),
    ] + ([("Transfer", transfer["table"])] if transfer["table"] else []) + dense["sections"] + bart["sections"]
    failures = failure_lines(grid["cells"] + (dense["grid"]["cells"] if dense["grid"] else [])
                             + [c for g in bart["grids"].values() for c in g["cells"]]) + "".join(f"\n- transfer {f['cell']}: {f['error']}" for f in transfer["failures"])
    if failures.strip():
        sections.append(("Failed cells", failures.strip()))
    title = (f"Synthetic world, tiny BERT (2 x 128) from a configuration (no pre-trained weights), {steps} intermediate "
             f"steps per cell, batch 32, mask budget 15%, seeds {', '.join(map(str, seed_list))} (mean ± std); "
             "closed-book cloze exact match on evaluation entities. `none`: no intermediate pre-training. "
             "`selective` needs a classification task (n/a here). `whole_word` = `random` in this world "
             "(every word is one token).")
    command = bench_command(command, preset, out, seeds=seeds, steps=steps if steps != size["steps"] else None,
                            transfer_seeds=transfer_seeds, no_seq2seq=not seq2seq)
    header = ["policy"] + spec.tasks
    return {**write_suite(out, suite="synthetic", title=title, sections=sections, rows=rows, header=header,
                          csv_rows=paired.csv_rows(rows), csv_header=paired.csv_header(header),
                          started=started, command=command, preset=preset,
                          results={"spec": spec.__dict__, "cells": grid["cells"], "learned": grid["learned"],
                                   "paired_to_random": paired.records(),
                                   "transfer": {"scores": transfer["scores"], "rows": transfer["rows"],
                                                "failures": transfer["failures"]},
                                   "dense": dense["grid"] and {"cells": dense["grid"]["cells"],
                                                               "learned": dense["grid"]["learned"],
                                                               "fills": dense["fills"],
                                                               "paired_to_random": dense["paired"]},
                                   "seq2seq": {"formats": seq2seq_records(bart["grids"]),
                                               "costs": bart["costs"]}}),
            "png": pngs, "grid": grid, "transfer": transfer}


def _recall_rows(grid: dict, spec: GridSpec) -> list[dict]:
    rows = []
    for method, cells in grid["learned"].items():
        row = {"method": method}
        for task in spec.tasks:
            recalls = [c["held_out"].get("recall") for key, c in cells.items()
                       if key.rsplit(" seed ", 1)[0] == task and c["status"] == "done" and c.get("held_out")]
            row[task] = fmt([r for r in recalls if r is not None]) if recalls else "n/a"
        rows.append(row)
    return rows
