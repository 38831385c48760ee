"""The ``family`` suite: defaults judged on drawn worlds, some never used to choose them.

Worlds of the family (``tasks/family.py``) are split by world seed into a *tuning* set and a
*held-out* set. On every world's main relation (its first) the suite runs, at equal compute:

- ``random``;
- the gold-span oracle (``salient_span``) under every budget fill (``sampler.FILL_MODES``); a
  table's oracle is its *best* fill on that world, so "x oracle" means what it says;
- ``learned-supervised`` and ``learned-meta``, each learned on that world (downstream
  validation included) and run with the fill its validation chose (``LearnedPolicy.fill``).

It reports each policy's cloze EM per world and over its best-fill oracle, the distribution
of those ratios per set, the global default fill (``sampler.DEFAULT_FILL``: what a run uses
when neither its config nor its policy names a fill) as the tuning worlds choose it and how
that choice fares on the held-out worlds, and, on the held-out worlds where the learned
policies fall furthest below the oracle, every row over several seeds with paired
differences to ``random``. With ``study`` (both presets), every candidate the learners
validated on the tuning worlds runs under every fill for the full length, and the suite
reports how well the short validation ranks them (``validation_study.py``).

Sizes (2 CPU cores, two one-thread workers):

- full:  8 tuning worlds (seeds 0-7) + 8 held-out worlds (seeds 100-107), 2,000 steps per
         cell, 300 meta-steps; seeds 0-2 on the 3 hardest held-out worlds; the validation
         study on the tuning worlds (9 more cells a world: 2 meta candidates and 1 supervised,
         x 3 fills).
- quick: 2 + 2 worlds, 400 steps, 100 meta-steps, validation runs of 100 steps; seeds 0-1
         on the hardest held-out world; the validation study on the 2 tuning worlds.
"""
from __future__ import annotations

import os
import statistics
import time

from maskpolicy.meta.validate import ValidateConfig
from maskpolicy.policies.sampler import DEFAULT_FILL, FILL_MODES
from maskpolicy.tasks.family import draw_knobs, main_task, parse_family_name
from maskpolicy.tasks.family_lexicon import ARCHETYPES

from .cells import run_cells
from .grid import GridSpec, pretrain_config, run_grid
from .paired import compare_to_random, seed_scores
from .report import bench_command, failure_lines, write_suite
from .tables import fmt, markdown_table
from .validation_study import run_study, study_text

FULL = dict(tuning=list(range(8)), held_out=list(range(100, 108)), steps=2000, meta_steps=300, hardest=3, seeds=3,
            study=True)
QUICK = dict(tuning=[0, 1], held_out=[100, 101], steps=400, meta_steps=100, hardest=1, seeds=2, study=True,
             learn_options={"validate": {"steps": 100}})
PRESETS = {"full": FULL, "quick": QUICK}
LEARNED_ROWS = ("learned-supervised", "learned-meta")
ORACLE = "salient_span"
BEST = "oracle (best fill)"


def run_family(out: str, *, preset: str = "full", steps: int | None = None, workers: int = 2,
               sizes: dict | None = None, command: str = "maskpolicy bench --suite family") -> dict:
    """Run (or read back) every cell; ``sizes`` overrides entries of the preset (tests)."""
    started = time.perf_counter()
    size = {**PRESETS[preset], **(sizes or {})}
    steps = steps or size["steps"]
    worlds = {w: "tuning" for w in size["tuning"]} | {w: "held-out" for w in size["held_out"]}
    tasks = [main_task(w) for w in worlds]
    # Candidates are always kept (a few small files): a run without the study learns the same
    # cells as one with it, so either reads the other's back.
    learn_options = {**size.get("learn_options", {}), "progress": False, "keep_candidates": True}
    learn_options["meta"] = {**learn_options.get("meta", {}), "meta_steps": size["meta_steps"]}
    base = dict(steps=steps, pretrain_options=size.get("pretrain_options", {}), learn_options=learn_options,
                workers=workers)

    def grids(task_list: list[str], seeds: list[int]) -> dict:
        main = run_grid(GridSpec(tasks=task_list, policies=["random", *LEARNED_ROWS], seeds=seeds, **base), out)
        oracles = {fill: run_grid(GridSpec(tasks=task_list, policies=[ORACLE], seeds=seeds, **{
            **base, "pretrain_options": {**base["pretrain_options"], "masking": {
                **base["pretrain_options"].get("masking", {}), "fill": fill}}}), os.path.join(out, f"oracle-{fill}"))
            for fill in FILL_MODES}
        return {"main": main, "oracles": oracles}

    first = grids(tasks, [0])
    table = world_rows(first, tasks, worlds)
    transfer = run_transfer_pairs(GridSpec(tasks=tasks, policies=["random"], seeds=[0], **base), out,
                                  first["main"]["learned"], [t for t, s in zip(tasks, worlds.values()) if s == "held-out"])
    study = None
    if size["study"]:
        tuning = [t for t, s in zip(tasks, worlds.values()) if s == "tuning"]
        spec = GridSpec(tasks=tuning, policies=["random"], seeds=[0], **base)
        study = run_study(spec, out, first["main"]["learned"], tuning, FILL_MODES,
                          {t: v for t in tuning if (v := _score(first["main"], t, "random")) is not None})
    hardest = sorted([r for r in table if r["set"] == "held-out" and r["_low"] is not None],
                     key=lambda r: r["_low"])[:size["hardest"]]
    hard_tasks = [r["_task"] for r in hardest]
    seeds = list(range(size["seeds"]))
    hard = grids(hard_tasks, seeds) if hard_tasks and len(seeds) > 1 else None
    sections = report_sections(first, table, tasks, worlds, transfer, study, steps,
                               ValidateConfig.from_dict(learn_options.get("validate", {})).steps)
    records = {"validation_study": study, "transfer": transfer,
               "worlds": [{k: v for k, v in r.items() if not k.startswith("_")} | {"task": r["_task"]} for r in table]}
    if hard:
        combined = with_best_oracle(hard, hard_tasks)
        rows = ["random", BEST, *LEARNED_ROWS]
        means = [{"policy": p, **{t: fmt([c["score"] for c in combined["cells"] if c["task"] == t and
                                         c["policy"] == p and c["status"] == "done"]) for t in hard_tasks}}
                 for p in rows]
        paired = compare_to_random(combined, hard_tasks, rows)
        sections += [(f"The {len(hard_tasks)} hardest held-out worlds, seeds {', '.join(map(str, seeds))}: "
                      "cloze EM, mean ± std", markdown_table(means, ["policy", *hard_tasks]))]
        sections += paired.section()
        records["hardest"] = {"tasks": hard_tasks, "seeds": seeds, "paired_to_random": paired.records(),
                              "cells": combined["cells"]}
    every = [c for g in (first, hard) if g for c in g["main"]["cells"] + [
        c for o in g["oracles"].values() for c in o["cells"]]]
    failures = failure_lines(every)
    if failures.strip():
        sections.append(("Failed cells", failures.strip()))
    title = (f"Family of synthetic worlds (`tasks/family.py`): {len(size['tuning'])} tuning worlds (seeds "
             f"{_seeds(size['tuning'])}) and {len(size['held_out'])} held-out worlds (seeds {_seeds(size['held_out'])}), "
             f"each world's first relation; tiny BERT (2 x 128) from a configuration, {steps} intermediate steps per "
             "cell, batch 32, mask budget 15%, seed 0; closed-book cloze exact match on evaluation subjects. Oracle = "
             "`salient_span` with gold spans under each fill; `x oracle` = EM over the oracle's best fill on that "
             "world. Learned rows run with the fill their validation chose (in brackets).")
    header = ["world", "set", "relation (answer kind)", "structure", "random", *[f"oracle {f}" for f in FILL_MODES],
              "learned-supervised", "learned-meta", "supervised x oracle", "meta x oracle"]
    command = bench_command(command, preset, out, steps=steps if steps != size["steps"] else None)
    return write_suite(out, suite="family", title=title, sections=sections, rows=table, header=header,
                       started=started, command=command, preset=preset,
                       results={"size": size, "steps": steps, **records,
                                "cells": [c for c in every]})


def report_sections(first: dict, table: list[dict], tasks: list[str], worlds: dict, transfer: list[dict],
                    study: dict | None, steps: int, validate_steps: int) -> list[tuple[str, str]]:
    """The report's sections on the seed-0 grids (the hardest worlds' seeds come after)."""
    sections = [
        ("Distribution over worlds (seed 0): share of worlds where the policy reaches 0.9x the oracle's best "
         "fill, median ratio, worlds below random", markdown_table(distribution_rows(table), DIST_HEADER)),
        ("The default fill, chosen on the tuning worlds", default_fill_text(first, tasks, worlds)),
        ("The fills the learned policies' validation chose", markdown_table(chosen_fill_rows(first, tasks, worlds),
                                                                             ["method", "set", *FILL_MODES])),
        ("What the learned policies select (seed 0, evaluation subjects' passages): precision of the tokens with "
         "p >= 0.5 against the answer tokens, answer recall within the budget, share of the subject's tokens "
         "masked under the chosen fill", markdown_table(selection_rows(first, tasks, worlds), SELECTION_HEADER)),
    ]
    sections.append(("Transfer within a world (held-out worlds, seed 0): the main relation's learned policies drive "
                     "pre-training for the world's second relation, with the run's default fill (a transferred "
                     "policy fills the budget at random)", markdown_table(transfer, TRANSFER_HEADER)))
    if study is not None:
        sections.append(("Does the short validation predict the full run? (tuning worlds)",
                         study_text(study, steps, validate_steps)))
    return sections


def _seeds(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2 else \
        ", ".join(map(str, seeds))


def _score(grid: dict, task: str, policy: str, seed: int = 0) -> float | None:
    return seed_scores(grid, task, policy).get(seed)


def _chosen_fill(grid: dict, method: str, task: str, seed: int = 0) -> str | None:
    cell = grid["learned"].get(method, {}).get(f"{task} seed {seed}", {})
    return (cell.get("validation") or {}).get("selected_fill")


def describe_world(world: int) -> str:
    k = draw_knobs(world)
    return (f"{k.num_relations} relations, {k.facts_per_passage} fact(s)/passage, names {k.person_words} word(s), "
            f"questions {k.question_phrasing}, mentions full {k.mention_full:.2f}, distractors {k.distractor_rate:.2f}")


def world_rows(grids: dict, tasks: list[str], worlds: dict) -> list[dict]:
    """One row per world (seed 0): scores, chosen fills, ratios to the best-fill oracle."""
    main, oracles = grids["main"], grids["oracles"]
    rows = []
    for task, (world, split) in zip(tasks, worlds.items()):
        relation = parse_family_name(task)[1]
        oracle = {f: _score(o, task, ORACLE) for f, o in oracles.items()}
        best = max((v for v in oracle.values() if v is not None), default=None)
        row = {"world": world, "set": split, "relation (answer kind)": f"{relation} ({ARCHETYPES[relation].kind})",
               "structure": describe_world(world), "_task": task}
        random_em = _score(main, task, "random")
        row["random"] = _num(random_em)
        row.update({f"oracle {f}": _num(v) + (" (best)" if v is not None and v == best else "")
                    for f, v in oracle.items()})
        ratios = []
        for policy, method in zip(LEARNED_ROWS, ("supervised", "meta")):
            em = _score(main, task, policy)
            fill = _chosen_fill(main, method, task)
            row[policy] = _num(em) + (f" ({fill})" if fill else "")
            ratio = em / best if em is not None and best else None
            row[f"{method} x oracle"] = "n/a (oracle 0)" if best == 0 else _num(ratio, 2)
            row[f"_{method}_ratio"], row[f"_{method}_below_random"] = ratio, (
                em is not None and random_em is not None and em < random_em)
            ratios.append(ratio)
        row["_low"] = min((r for r in ratios if r is not None), default=None)
        rows.append(row)
    return rows


def _num(value: float | None, digits: int = 3) -> str:
    return "failed" if value is None else f"{value:.{digits}f}"


DIST_HEADER = ["set", "method", "worlds", ">= 0.9x oracle", "median x oracle", "below random"]


def distribution_rows(table: list[dict]) -> list[dict]:
    rows = []
    for split in ("tuning", "held-out"):
        for method in ("supervised", "meta"):
            mine = [r for r in table if r["set"] == split]
            ratios = [r[f"_{method}_ratio"] for r in mine if r[f"_{method}_ratio"] is not None]
            rows.append({"set": split, "method": method, "worlds": len(mine),
                         ">= 0.9x oracle": f"{sum(x >= 0.9 for x in ratios)} of {len(ratios)}",
                         "median x oracle": f"{statistics.median(ratios):.2f}" if ratios else "n/a",
                         "below random": str(sum(r[f"_{method}_below_random"] for r in mine))})
    return rows


def default_fill_text(grids: dict, tasks: list[str], worlds: dict) -> str:
    """The fill with the highest mean oracle EM on the tuning worlds, and the held-out means."""
    means = {}
    for split in ("tuning", "held-out"):
        chosen = [t for t, s in zip(tasks, worlds.values()) if s == split]
        for fill, grid in grids["oracles"].items():
            values = [v for t in chosen if (v := _score(grid, t, ORACLE)) is not None]
            means[(split, fill)] = statistics.fmean(values) if values else None
    tuned = [f for f in FILL_MODES if means[("tuning", f)] is not None]
    if not tuned:
        return "no oracle cell finished on the tuning worlds"
    pick = max(tuned, key=lambda f: means[("tuning", f)])
    rows = [{"fill": f, "tuning worlds": _num(means[("tuning", f)]), "held-out worlds": _num(means[("held-out", f)])}
            for f in FILL_MODES]
    verdict = (f"The tuning worlds choose `{pick}` (highest mean oracle EM); the library's `DEFAULT_FILL` is "
               f"`{DEFAULT_FILL}`" + (" (the same)." if pick == DEFAULT_FILL else
                                      " (they differ: the default was not chosen by this run)."))
    return verdict + "\n\n" + markdown_table(rows, ["fill", "tuning worlds", "held-out worlds"])


def chosen_fill_rows(grids: dict, tasks: list[str], worlds: dict) -> list[dict]:
    rows = []
    for method in ("supervised", "meta"):
        for split in ("tuning", "held-out"):
            fills = [_chosen_fill(grids["main"], method, t) for t, s in zip(tasks, worlds.values()) if s == split]
            rows.append({"method": method, "set": split, **{f: str(fills.count(f)) for f in FILL_MODES}})
    return rows


TRANSFER_HEADER = ["world", "source -> target", "random", "learned-supervised", "learned-meta",
                   "supervised - random", "meta - random"]


def run_transfer_pairs(spec: GridSpec, root: str, learned: dict, tasks: list[str]) -> list[dict]:
    """Per world: ``random`` and each method's main-relation policy on the world's second
    relation (seed 0, the run's default fill). Rows as in ``TRANSFER_HEADER``."""
    jobs, keys = [], []
    for task in tasks:
        world, source = parse_family_name(task)
        target = f"{task.rsplit(':', 1)[0]}:{draw_knobs(world).relations[1]}"
        jobs.append(("pretrain", pretrain_config(spec, root, target, "random", "random", 0)))
        keys.append((task, target, "random"))
        for method in ("supervised", "meta"):
            cell = learned.get(method, {}).get(f"{task} seed 0", {})
            if cell.get("status") == "done":
                jobs.append(("pretrain", pretrain_config(spec, root, target, f"transfer-{method}-from-{source}",
                                                         cell["policy"], 0)))
                keys.append((task, target, method))
    results = {key: cell for key, cell in zip(keys, run_cells(jobs, spec.workers))}
    rows = []
    for task in tasks:
        found = {k[2]: c for k, c in results.items() if k[0] == task}
        target = next(k[1] for k in results if k[0] == task)

        def em(method: str) -> float | None:
            cell = found.get(method) or {}
            return float(cell["metrics"]["score"]) if cell.get("status") == "done" else None

        row = {"world": parse_family_name(task)[0],
               "source -> target": f"{parse_family_name(task)[1]} -> {parse_family_name(target)[1]}",
               "random": _num(em("random"))}
        for method in ("supervised", "meta"):
            fill = (found.get(method) or {}).get("fill")
            row[f"learned-{method}"] = _num(em(method)) + (f" ({fill})" if fill else "")
            both = em(method) is not None and em("random") is not None
            row[f"{method} - random"] = f"{em(method) - em('random'):+.3f}" if both else "n/a"
        rows.append(row)
    return rows


SELECTION_HEADER = ["world", "set", "method", "precision (p >= 0.5)", "answer recall (budget)", "subject masked"]


def selection_rows(grids: dict, tasks: list[str], worlds: dict) -> list[dict]:
    rows = []
    for task, (world, split) in zip(tasks, worlds.items()):
        for method in ("supervised", "meta"):
            cell = grids["main"]["learned"].get(method, {}).get(f"{task} seed 0", {})
            held = cell.get("held_out") or {}
            kept = (cell.get("validation") or {}).get("kept") or {}
            subject = (kept.get("masks") or {}).get("key_masked")
            rows.append({"world": world, "set": split, "method": method,
                         "precision (p >= 0.5)": _num(held.get("threshold_precision"), 2),
                         "answer recall (budget)": _num(held.get("recall"), 2),
                         "subject masked": _num(subject, 2)})
    return rows


def with_best_oracle(grids: dict, tasks: list[str]) -> dict:
    """The main grid's cells plus, per task, the oracle's cells under the fill with the best
    mean over seeds, renamed ``BEST`` (the paired comparison takes it as one row)."""
    cells = list(grids["main"]["cells"])
    for task in tasks:
        def mean(fill: str) -> float:
            values = list(seed_scores(grids["oracles"][fill], task, ORACLE).values())
            return statistics.fmean(values) if values else -1.0
        best = max(FILL_MODES, key=mean)
        cells += [{**c, "policy": BEST, "fill": best} for c in grids["oracles"][best]["cells"] if c["task"] == task]
    return {"cells": cells}
