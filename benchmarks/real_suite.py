"""The ``real`` suite: task-guided intermediate pre-training on real text (``../shared/data``).

1. General pre-training: a ``tiny`` BERT from a configuration (no pre-trained weights are
   available offline) with random masking on WikiText-2 (passages of at most 30 words);
   its tokenizer is built from WikiText-2 and shared by every later model and policy.
2. Intermediate pre-training from that model on the in-domain corpus (IMDB reviews + Yelp
   sentences) for MR and SST-2, one cell per policy and seed at equal compute, then
   fine-tuning on the task and accuracy on its evaluation split. ``selective`` = Train No
   Evil (a policy network on buffer-rule labels from a classifier fine-tuned from the
   general model; only tokens predicted important are masked); ``learned-supervised`` =
   the same network used as a soft policy that fills the budget.
3. SQuAD subset: a supervised policy trained on the answers of the training questions,
   scored (token precision / recall within the budget) on held-out questions' answers in
   the paragraphs; then closed-book cloze exact match after intermediate pre-training.
4. SQuAD by generation (``squad_seq2seq``; not in the pretrained presets: no pretrained
   encoder-decoder is available offline): a BART ``tiny`` general-pre-trained on WikiText-2
   with the BERT's tokenizer, then intermediate denoising on the SQuAD paragraphs with output
   ``spans`` and ``full`` per policy, closed-book QA by generation (``seq2seq_section.py``).

Compute curves: for MR / SST-2 a classifier is fine-tuned from the model at
``probe_points`` points of each run (a cheaper fine-tuning than the final one, the
``probe`` preset), so the curves and steps-to-reach are downstream accuracy; held-out
masked-token accuracy is also recorded at every evaluation. For SQuAD the curve is the
cloze exact match itself.

Below the main table: each row's paired difference to ``random`` per task (same seed, same
data order), mean with a 95% interval over seeds (``paired.py``).
"""
from __future__ import annotations

import os
import time

from maskpolicy.policies.errors import DataError
from maskpolicy.train.config import PretrainConfig
from maskpolicy.train.models import preset_shape
from maskpolicy.train.sources import SOURCES

from .cells import pretrain_cell
from .grid import GridSpec, grid_rows, run_grid
from .paired import EXPLAIN_AGAIN, compare_curves_to_random, compare_to_random
from .seq2seq_section import records as seq2seq_records
from .seq2seq_section import run_seq2seq
from .report import bench_command, curve_plots, failure_lines, reach_rows, write_suite
from .tables import fmt, markdown_table
from .transfer import check_transfer_seeds, run_transfer

MAX_WORDS = 30  # corpus passages (IMDB, WikiText-2) are cut at 30 words: about 40 WordPiece tokens
MAX_LENGTH = 64  # general corpus, in-domain corpus, MR / SST-2 sentences
SQUAD_MAX_LENGTH = 128  # SQuAD paragraphs are longer (the general model gets 128 positions)
# Fine-tuning at 5e-4: a 2 x 128 model from a configuration learns little at BERT's 1e-4 in a
# few epochs.
# Sizes chosen so that the full suite runs in about 1.5 h on 2 CPU cores (3 seeds x 12 cells
# of 1,000 steps); `selective` labels come from the first 3,000 training sentences (the
# buffer rule costs one classifier pass per candidate word). A probe (2 epochs on 4,000
# sentences) costs about 25 s on one core, the final fine-tuning (3 epochs, all) 85 s.
FULL = dict(general_steps=6000, steps=1000, seeds=3, tasks=["mr", "sst2", "squad"],
            policies=["none", "random", "selective", "learned-supervised"],
            corpus_cap=None, finetune={"epochs": 3, "learning_rate": 5e-4}, selective={"max_examples": 3000},
            probe={"epochs": 2, "learning_rate": 5e-4, "max_train_examples": 4000}, probe_points=4,
            classifier={"epochs": 3, "learning_rate": 5e-4},
            squad_policies=["none", "random", "salient_span", "learned-supervised"], transfer_seeds=1,
            squad_seq2seq=["none", "random", "salient_span", "learned-supervised"])
QUICK = dict(general_steps=600, steps=200, seeds=1, tasks=["mr", "squad"],
             policies=["none", "random", "selective", "learned-supervised"],
             corpus_cap=3000, finetune={"epochs": 2, "learning_rate": 5e-4, "max_train_examples": 3000},
             selective={"max_examples": 1000}, classifier={"epochs": 2, "learning_rate": 5e-4},
             probe={"epochs": 1, "learning_rate": 5e-4, "max_train_examples": 2000}, probe_points=2,
             squad_policies=["random", "learned-supervised"], squad_seq2seq=["random", "salient_span"])
# A GPU (``--preset gpu``, defined, not yet run: no GPU was lent): a 4 x 256 model, longer
# general and intermediate pre-training, 5 seeds, selective labels from every sentence.
GPU = {**FULL, "model": "mini", "general_steps": 20000, "steps": 3000, "seeds": 5, "selective": {},
       "probe_points": 6, "policies": ["none", "random", "pmi", "selective", "learned-supervised"]}
# From a pretrained encoder (``--preset pretrained``; ``--quick`` for its small form): the
# offline all-MiniLM-L6-v2 (6 x 384, ``--model minilm-l6``; a sentence encoder without an MLM
# head). Its "general" stage is the head warm-up alone, body frozen, on WikiText-2 (0
# general steps); intermediate pre-training and fine-tuning at BERT-style learning rates
# (a pretrained body at 1e-3 would forget what it knows). Measured with 2 workers of one
# thread each: 2.75 s a training step at 32 x 64 (about 10x the tiny model), 0.9 s a
# fine-tuning step, 45-65 s a linear probe on 2,000 sentences. The first sizing (200 steps,
# probes by a 32-step fine-tuning) took 1,430 s a cell, about 8 h in all, and its probes read
# 0.54-0.70 on MR for models alike (fine-tuning noise); the second (100 steps at batch 32,
# linear probes of 2,000 sentences, fine-tuning 2 epochs on 3,000) took 581 s a `random`
# cell and 300 s a `none` cell, 3.1 h estimated without SQuAD. Hence batch 16 (the head
# warm-up too), 60 steps, linear probes (``linear_probe.py``: deterministic) of 1,500
# sentences at steps 30 and 60, fine-tuning 1 epoch on 3,000 sentences, and the learners'
# classifier 1 epoch on 3,000 with selective labels from 400 sentences: about 1.5 h in all.
PRETRAINED = {**FULL, "model": "minilm-l6", "general_steps": 0, "head_warmup_steps": 200, "learning_rate": 1e-4,
              "batch_size": 16, "steps": 60, "seeds": 3, "corpus_cap": 20000, "eval_points": 6,
              "policies": ["none", "random", "span", "pmi", "selective", "learned-supervised"],
              "finetune": {"epochs": 1, "learning_rate": 1e-4, "max_train_examples": 3000},
              "probe": {"method": "linear", "max_train_examples": 1500}, "probe_points": 2,
              "classifier": {"epochs": 1, "learning_rate": 1e-4, "max_train_examples": 3000},
              "selective": {"max_examples": 400}, "transfer_seeds": 0,
              "squad_policies": ["none", "random", "salient_span", "learned-supervised"],
              "squad_seq2seq": [],  # no pretrained encoder-decoder offline: the seq2seq section is the full preset's
              # The SQuAD learners' downstream validation (meta/validate.py: 300 steps per
              # candidate and for a random baseline) ran past 7 min a learner with minilm-l6 at
              # 128 tokens (10x the cells' steps); the grid's own SQuAD cells make that comparison (learned
              # against random, same start, same steps), so it is off here.
              "squad_validate": {"enabled": False},
              # SQuAD's own schedule: at the grid's 60 steps (batch 16, 1e-4: one pass over the 711
              # paragraphs) every policy's cloze EM was 0.000-0.002. SQuAD gets 5x the steps at 3x
              # the rate (the point is memorising the paragraphs' facts, not keeping the encoder's
              # general features): 390-440 s a cell, 38 min for the 9 cells; random 0.021, the gold
              # spans 0.305.
              "squad_schedule": {"steps": 300, "learning_rate": 3e-4}}
PRETRAINED_QUICK = {**PRETRAINED, "head_warmup_steps": 50, "steps": 40, "seeds": 1, "tasks": ["mr", "squad"],
                    "squad_schedule": {},  # SQuAD at the grid's 40 steps: a smoke test
                    "eval_points": 4,
                    "corpus_cap": 2000, "policies": ["none", "random", "selective", "learned-supervised"],
                    "finetune": {"epochs": 1, "learning_rate": 1e-4, "max_train_examples": 1000},
                    "probe": {"method": "linear", "max_train_examples": 500},
                    "classifier": {"epochs": 1, "learning_rate": 1e-4, "max_train_examples": 1000},
                    "selective": {"max_examples": 200}, "squad_policies": ["random", "salient_span"]}
PRESETS = {"full": FULL, "quick": QUICK, "gpu": GPU, "pretrained": PRETRAINED, "pretrained-quick": PRETRAINED_QUICK}


def check_data(data_dir: str | None, tasks: list[str]) -> str:
    """Load every task once so that missing or malformed files are reported before any cell
    runs: one error naming the problems of every task, not only the first task's."""
    from maskpolicy.tasks.real import resolve_data_dir
    from maskpolicy.tasks.registry import get_task

    root = resolve_data_dir(data_dir)
    problems = []
    for name in ["wikitext2"] + tasks:
        try:
            get_task(name, data_dir=root)  # DataError names each missing file
        except DataError as err:
            problems.append(f"{name}: {err}")
    if problems:
        raise DataError("the real suite cannot start:\n  " + "\n  ".join(problems))
    return root


def run_real(out: str, *, preset: str = "full", seeds: int | None = None, steps: int | None = None,
             workers: int = 2, data_dir: str | None = None, transfer_seeds: int | None = None,
             sizes: dict | None = None, seq2seq: bool = True, command: str = "maskpolicy bench --suite real") -> dict:
    """``preset``: full | quick | gpu; ``sizes`` overrides entries of it (tests); ``transfer_seeds``:
    the transfer matrix on the first N seeds (default: the preset's; the quick preset has none);
    ``seq2seq=False`` (``--no-seq2seq``) skips the SQuAD-by-generation section."""
    started = time.perf_counter()
    size = {**PRESETS[preset], **(sizes or {})}
    seed_list = list(range(seeds or size["seeds"]))
    size["transfer_seeds"] = check_transfer_seeds(transfer_seeds, size.get("transfer_seeds", 0), seed_list)
    root = check_data(data_dir, size["tasks"])
    steps = steps or size["steps"]
    general = pretrain_cell(PretrainConfig(
        task="wikitext2", data_dir=root, policy="random", model=size.get("model", "tiny"), steps=size["general_steps"], seed=0,
        batch_size=size.get("batch_size", 32), max_length=SQUAD_MAX_LENGTH, task_options={"max_words": MAX_WORDS},
        eval_every=max(size["general_steps"] // 10, 1), save_every=size["general_steps"], progress=False,
        head_warmup_steps=size.get("head_warmup_steps"), out=os.path.join(out, "general", "wikitext2")))
    if general["status"] != "done":
        raise DataError(f"general pre-training on WikiText-2 failed: {general['error']}")
    model = os.path.join(out, "general", "wikitext2", "model")
    task_options = {"max_words": MAX_WORDS, **({} if size["corpus_cap"] is None else {"max_corpus_passages": size["corpus_cap"]})}
    shared = {"model": model, "data_dir": root, "batch_size": size.get("batch_size", 32), "max_length": MAX_LENGTH,
              **({"learning_rate": size["learning_rate"]} if "learning_rate" in size else {})}
    learn_options = {"model": model, "data_dir": root, "max_length": MAX_LENGTH, "progress": False,
                     "supervised": {"classifier": {"model": model, **size["classifier"]}, "selective": size["selective"]}}
    classification = [t for t in size["tasks"] if t != "squad"]
    # Evaluations along each run (the compute curves): every one costs a held-out MLM pass,
    # about 3 s with minilm-l6, so the pretrained presets take fewer.
    eval_points = size.get("eval_points", GridSpec.eval_points)
    eval_every = max(steps // eval_points, 1)
    probe_every = eval_every * max(steps // size["probe_points"] // eval_every, 1)  # a multiple of eval_every
    specs = [GridSpec(tasks=classification, policies=size["policies"], seeds=seed_list, steps=steps,
                      pretrain_options={**shared, "task_options": task_options, "finetune": size["finetune"],
                                        "probe": size["probe"], "probe_every": probe_every},
                      learn_options={**learn_options, "task_options": task_options}, workers=workers,
                      curve_key="probe_accuracy", eval_points=eval_points)]
    if "squad" in size["tasks"]:
        # ``squad_schedule``: SQuAD's own steps and learning rate where a preset gives them;
        # ``--steps N`` still runs every grid N steps.
        schedule = size.get("squad_schedule", {})
        squad_steps = schedule.get("steps", steps) if steps == size["steps"] else steps
        squad_rate = {"learning_rate": schedule["learning_rate"]} if "learning_rate" in schedule else {}
        specs.append(GridSpec(tasks=["squad"], policies=size["squad_policies"], seeds=seed_list, steps=squad_steps,
                              pretrain_options={**shared, "max_length": SQUAD_MAX_LENGTH, **squad_rate},
                              learn_options={**learn_options, "max_length": SQUAD_MAX_LENGTH,
                                             **({"validate": size["squad_validate"]} if "squad_validate" in size else {})},
                              workers=workers,
                              eval_points=eval_points))
    grids = [run_grid(spec, out) for spec in specs]
    bart = None
    if "squad" in size["tasks"] and size.get("squad_seq2seq") and seq2seq:
        bart = run_squad_seq2seq(out, size, root=root, tokenizer=model, seeds=seed_list, steps=steps,
                                    workers=workers, eval_points=eval_points)
    # Transfer: each task's supervised policy drives every other task's intermediate
    # pre-training (first seeds only; the diagonal and `random` are the grid's own cells).
    tasks = [t for spec in specs for t in spec.tasks]
    transfer = None
    if size.get("transfer_seeds", 0) and len(tasks) > 1:
        per_task = {t: (spec.pretrain_options, spec.learn_options) for spec in specs for t in spec.tasks}
        transfer = run_transfer(tasks, root=out, steps=steps, seeds=seed_list[: size["transfer_seeds"]],
                                method="supervised", per_task=per_task, workers=workers)
    cells = [c for g in grids for c in g["cells"]]
    policies = list(dict.fromkeys(p for spec in specs for p in spec.policies))
    merged = {"cells": cells}
    rows = grid_rows(merged, GridSpec(tasks=tasks, policies=policies, seeds=seed_list, steps=steps))
    paired = compare_to_random(merged, tasks, policies)  # per task: MR / SST-2 accuracy, SQuAD cloze EM
    pngs = []
    probe = size["probe"]
    examples = _sentences_text(probe)
    probe_text = (f"accuracy of a linear probe (logistic regression on the frozen mean-pooled features) of {examples}"
                  if probe.get("method") == "linear" else f"accuracy fine-tuned {probe['epochs']} epoch(s) on {examples}")
    reach = {}
    for spec, grid in zip(specs, grids):
        pngs += curve_plots(grid, spec, out, probe_text if spec.curve_key == "probe_accuracy" else "cloze EM")
        for row in reach_rows(grid, spec):
            reach.setdefault(row["policy"], {"policy": row["policy"]}).update(row)
    warm = general.get("head_warmup") or {}
    general_line = ((f"General stage: the new MLM head warmed up on WikiText-2 for {warm['steps']} steps, body frozen "
                     f"(MLM loss {warm['loss_first']:.2f} -> {warm['loss_last']:.2f}, {warm['seconds']:.0f} s), then "
                     if warm.get("steps") else "General pre-training: WikiText-2, ")
                    + f"{size['general_steps']} steps with random masking, held-out MLM accuracy "
                    f"{general['metrics']['score']:.3f} ({general['train_seconds']:.0f} s).")
    reach_table = markdown_table([{**{t: "-" for t in tasks}, **r} for r in reach.values()], ["policy"] + tasks)
    probe_pairs = compare_curves_to_random({"cells": [c for g in grids for c in g["cells"]]},
                                           classification, size["policies"], "probe_accuracy")
    probe_section = probe_pairs.section(
        f"Paired difference to random of the probes along the runs (MR/SST-2: {probe_text}), mean [95% CI] over "
        "seeds; * = interval excludes zero", "Columns: task @ step. " + EXPLAIN_AGAIN) if probe_pairs.tasks else []
    sections = [*paired.section(), *probe_section,
                (f"Steps to reach random's final score (fraction of random's steps; MR/SST-2: the probes, "
                 f"{probe_text}, every {probe_every} steps)", reach_table),
                ("Learned policies on held-out data (token precision / recall / F1 within the 15% budget)",
                 markdown_table(_policy_rows(grids, tasks), ["task", "method", "precision", "recall", "F1", "random recall",
                                                              "learning s"])),
                ("General model", general_line)]
    if bart is not None:
        sections += bart["sections"]
        pngs += bart["png"]
    if transfer is not None:
        sections.append(("Transfer (supervised policies; rows: whose policy, columns: the task pre-trained and scored)",
                         transfer["table"]))
        pngs += transfer["png"]
    seq2seq_cells = [c for g in (bart or {}).get("grids", {}).values() for c in g["cells"]]
    failures = failure_lines(cells + seq2seq_cells) + "".join(f"\n- transfer {f['cell']}: {f['error']}"
                                              for f in (transfer or {}).get("failures", []))
    failures = failures.strip()
    if failures:
        sections.append(("Failed cells", failures))
    model_name = size.get("model", "tiny")
    start = (f"pretrained {model_name} ({SOURCES[model_name].about}), its new MLM head warmed up on WikiText-2"
             if model_name in SOURCES else
             f"a small {model_name} BERT ({preset_shape(model_name)}) from a configuration, general-pre-trained on "
             "WikiText-2")
    title = (f"Real data, from {start}, then {steps} intermediate steps per cell on the in-domain "
             f"corpus (IMDB + Yelp for MR/SST-2; the SQuAD paragraphs for squad{_own_schedule(specs, steps)}), batch "
             f"{shared['batch_size']}, mask "
             f"budget 15%, seeds {', '.join(map(str, seed_list))} (mean ± std). MR/SST-2: accuracy after fine-tuning "
             f"({_finetune_text(size['finetune'])}); squad: closed-book cloze exact match. `none`: the general "
             "model without intermediate pre-training. `-`: not run for that task.")
    command = bench_command(command, preset, out, seeds=seeds, steps=steps if steps != size["steps"] else None,
                            transfer_seeds=transfer_seeds, data_dir=data_dir, no_seq2seq=not seq2seq)
    header = ["policy"] + tasks
    return {**write_suite(out, suite="real", title=title, sections=sections, rows=rows, header=header,
                          csv_rows=paired.csv_rows(rows), csv_header=paired.csv_header(header),
                          started=started, command=command, preset=preset,
                          results={"specs": [s.__dict__ for s in specs], "general": general.get("metrics"),
                                   "cells": cells, "learned": [g["learned"] for g in grids],
                                   "paired_to_random": paired.records(),
                                   "probes_paired_to_random": probe_pairs.records(),
                                   "seq2seq": None if bart is None else {
                                       "general": bart["general"], "formats": seq2seq_records(bart["grids"])},
                                   "transfer": None if transfer is None else {
                                       "scores": transfer["scores"], "rows": transfer["rows"],
                                       "failures": transfer["failures"]}}),
            "png": pngs, "grids": grids}


def _own_schedule(specs: list[GridSpec], steps: int) -> str:
    """', 300 steps at lr 0.0003' for a SQuAD grid on its own schedule (``squad_schedule``), else ''."""
    squad = [spec for spec in specs if spec.tasks == ["squad"]]
    if not squad:
        return ""
    rate = squad[0].pretrain_options.get("learning_rate")
    if squad[0].steps == steps and rate == specs[0].pretrain_options.get("learning_rate"):
        return ""
    return f", {squad[0].steps} steps" + (f" at lr {rate:g}" if rate is not None else "")


def _sentences_text(finetune: dict) -> str:
    sentences = finetune.get("max_train_examples")
    return f"{sentences:,} sentences" if sentences else "all sentences"


def _finetune_text(finetune: dict) -> str:
    return f"{finetune.get('epochs', 3)} epoch(s) on {_sentences_text(finetune)} at {finetune.get('learning_rate', 5e-4):g}"


def run_squad_seq2seq(out: str, size: dict, *, root: str, tokenizer: str, seeds: list[int], steps: int, workers: int,
                      eval_points: int) -> dict:
    """SQuAD by generation: a BART ``tiny`` general-pre-trained on WikiText-2 like the BERT
    (random masking, same steps, the same tokenizer), then the seq2seq grid of both output
    formats (``seq2seq_section.run_seq2seq``) on the SQuAD paragraphs, QA by generation."""
    general = pretrain_cell(PretrainConfig(
        task="wikitext2", data_dir=root, policy="random", arch="seq2seq", model="tiny", tokenizer=tokenizer,
        steps=size["general_steps"], seed=0, batch_size=size.get("batch_size", 32), max_length=SQUAD_MAX_LENGTH,
        learning_rate=1e-3, task_options={"max_words": MAX_WORDS}, eval_every=max(size["general_steps"] // 10, 1),
        save_every=size["general_steps"], progress=False, out=os.path.join(out, "general", "wikitext2-bart")))
    if general["status"] != "done":
        raise DataError(f"general seq2seq pre-training on WikiText-2 failed: {general['error']}")
    result = run_seq2seq(out, tasks=["squad"], seeds=seeds, steps=steps, workers=workers, cost_steps=0,
                         pretrain_options={"data_dir": root, "batch_size": size.get("batch_size", 32),
                                           "max_length": SQUAD_MAX_LENGTH,
                                           **({"qa": size["qa"]} if "qa" in size else {})},
                         learn_options={"data_dir": root, "max_length": SQUAD_MAX_LENGTH, "progress": False},
                         policies=size["squad_seq2seq"], model=os.path.join(out, "general", "wikitext2-bart", "model"),
                         eval_points=eval_points)
    line = (f"BART tiny general-pre-trained on WikiText-2 for {size['general_steps']} steps (random masking, output "
            f"spans, 1e-3): held-out denoising accuracy {general['metrics']['score']:.3f} "
            f"({general['train_seconds']:.0f} s); then {steps} steps per cell on the SQuAD paragraphs.")
    sections = [(heading.replace("Seq2seq", "SQuAD seq2seq", 1), f"{line}\n\n{body}" if i == 0 else body)
                for i, (heading, body) in enumerate(result["sections"])]
    return {**result, "sections": sections, "general": general.get("metrics")}


def _policy_rows(grids: list[dict], tasks: list[str]) -> list[dict]:
    rows = []
    for grid in grids:
        for method, cells in grid["learned"].items():
            for task in tasks:
                done = [c for key, c in cells.items() if key.rsplit(" seed ", 1)[0] == task and c["status"] == "done"]
                if not done:
                    continue
                held = [c.get("held_out") or {} for c in done]
                rows.append({"task": task, "method": method,
                             **{name: fmt([h.get(key) for h in held if h.get(key) is not None])
                                for name, key in (("precision", "precision"), ("recall", "recall"), ("F1", "f1"),
                                                  ("random recall", "random_recall"))},
                             "learning s": fmt([c.get("seconds") for c in done if c.get("seconds") is not None], 0)})
    return rows
