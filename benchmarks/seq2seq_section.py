"""The synthetic suite's seq2seq section: does the output format matter, and do the policies
that help a masked LM help an encoder-decoder?

For each output format (``spans``: the masked spans after their markers; ``full``: the
whole sentence) a grid of ``none / random / span / salient_span / learned-supervised /
learned-meta`` pre-trains BART ``tiny`` from a configuration on the world's corpus (same
steps, batch, budget and seeds as every other cell of its format), then scores closed-book
QA by generation on the evaluation entities (fine-tuned on the training questions; greedy
EM is the score, beam EM and token F1 beside it). The meta-learned policies are learned
with the seq2seq model as the inner model, in the format they drive (``learn --arch
seq2seq --output F``). Below the tables:

- each row's paired difference to ``random`` per format, and ``full - spans`` per row
  (same seed, same policy);
- answer recall of the learned policies, and what each policy's masks cover per format
  (answer, subject, the subject where the answer is masked; ``meta.mask_profile``);
- compute curves: the evaluation questions read as denoising (``cloze_em``, no
  fine-tuning) along each run, and the share of ``random``'s steps to reach its final point;
- cost of each format, measured side by side in one process on the same batches: decoder
  target length, encoder length, seconds per step and target tokens per second.
"""
from __future__ import annotations

import os
import statistics
import time

from .dense_world import MASK_HEADER, mask_rows
from .grid import GridSpec, grid_rows, run_grid
from .paired import EXPLAIN_AGAIN, HEADING, compare_to_random, format_diff, paired_difference, seed_scores
from .report import curve_plots, reach_rows
from .tables import fmt, markdown_table

OUTPUTS = ("spans", "full")
SEQ2SEQ_POLICIES = ["none", "random", "span", "salient_span", "learned-supervised", "learned-meta"]
# BART tiny from scratch learns the world at 1e-3 (1,500 steps: EM 1.00 with salient_span, full).
SEQ2SEQ_PRETRAIN = {"arch": "seq2seq", "model": "tiny", "learning_rate": 1e-3}


def run_seq2seq(out: str, *, tasks: list[str], seeds: list[int], steps: int, pretrain_options: dict,
                learn_options: dict, workers: int, cost_steps: int = 20, policies: list[str] | None = None,
                model: str = "tiny", eval_points: int = GridSpec.eval_points) -> dict:
    """Run (or read back) one grid per output format under ``out/seq2seq/<format>``;
    returns ``{"sections", "grids", "specs", "costs", "png"}``. ``model``: the BART preset
    or a seq2seq checkpoint every cell starts from (and meta-learning differentiates through)."""
    grids, specs, pngs = {}, {}, []
    for output in OUTPUTS:
        learn = {**learn_options, "arch": "seq2seq", "output": output}
        if model != "tiny":
            learn["model"] = model
        spec = GridSpec(tasks=tasks, policies=policies or SEQ2SEQ_POLICIES, seeds=seeds, steps=steps,
                        pretrain_options={**SEQ2SEQ_PRETRAIN, **pretrain_options, "model": model, "output": output},
                        learn_options=learn, workers=workers, curve_key="cloze_em", eval_points=eval_points)
        root = os.path.join(out, "seq2seq", output)
        grids[output], specs[output] = run_grid(spec, root), spec
        pngs += curve_plots(grids[output], spec, root, f"denoising cloze EM ({output})")
    costs = format_costs(tasks[0], pretrain_options, steps=cost_steps, seed=seeds[0]) if cost_steps else []
    return {"sections": sections(grids, specs, costs), "grids": grids, "specs": specs, "costs": costs, "png": pngs}


# ``maskpolicy bench --suite seq2seq``: the section on its own (the synthetic suite runs it too).
SUITE_PRESETS = {
    # 3,000 steps: at 1,500 the spans format had learned the facts on some seeds only.
    "full": dict(tasks=["synthetic:birthplace"], seeds=3, steps=3000, meta_steps=300),
    "quick": dict(tasks=["synthetic:birthplace"], seeds=1, steps=400, meta_steps=150),
    "gpu": dict(tasks=["synthetic:birthplace", "synthetic:profession", "synthetic:colour", "synthetic:employer"],
                seeds=5, steps=3000, meta_steps=600),
}


def run_seq2seq_suite(out: str, *, preset: str = "full", seeds: int | None = None, steps: int | None = None,
                      workers: int = 2, sizes: dict | None = None,
                      command: str = "maskpolicy bench --suite seq2seq") -> dict:
    from .report import bench_command, failure_lines, write_suite

    started = time.perf_counter()
    size = {**SUITE_PRESETS[preset], **(sizes or {})}
    seed_list = list(range(seeds or size["seeds"]))
    learn_options = {**size.get("learn_options", {}), "progress": False}
    learn_options["meta"] = {**learn_options.get("meta", {}), "meta_steps": size["meta_steps"]}
    result = run_seq2seq(out, tasks=size["tasks"], seeds=seed_list, steps=steps or size["steps"],
                         pretrain_options=size.get("pretrain_options", {}), learn_options=learn_options,
                         workers=workers, cost_steps=size.get("cost_steps", 20))
    rows, header = main_table(result["grids"], result["specs"])
    extra = sections(result["grids"], result["specs"], result["costs"], with_main=False)
    failures = failure_lines([c for g in result["grids"].values() for c in g["cells"]])
    if failures.strip():
        extra.append(("Failed cells", failures.strip()))
    title = (f"{MAIN_HEADING}. Synthetic world, BART tiny (2 x 128, encoder and decoder) from a configuration, "
             f"{steps or size['steps']} intermediate steps per cell at 1e-3, batch 32, mask budget 15%, seeds "
             f"{', '.join(map(str, seed_list))}; QA fine-tuned on the training questions, answers generated for the "
             "evaluation entities (SQuAD-normalised exact match). `none`: no intermediate pre-training.")
    return {**write_suite(out, suite="seq2seq", title=title, sections=extra, rows=rows, header=header,
                          started=started, preset=preset,
                          command=bench_command(command, preset, out, seeds=seeds, steps=steps),
                          results={"formats": records(result["grids"]), "costs": result["costs"]}),
            "png": result["png"], "grids": result["grids"]}


MAIN_HEADING = "Seq2seq (BART tiny): closed-book QA exact match by generation, greedy and beam, mean ± std over seeds"


def main_table(grids: dict, specs: dict) -> tuple[list[dict], list[str]]:
    """(rows, header): per policy, greedy and beam EM of each format per task."""
    spec = specs[OUTPUTS[0]]
    rows = []
    for policy in spec.policies:
        row = {"policy": policy}
        for task in spec.tasks:
            for output in OUTPUTS:
                row[f"{_short(task)} {output}"] = grid_rows(grids[output], specs[output])[
                    spec.policies.index(policy)][task]
                row[f"{_short(task)} {output} beam"] = fmt(_metric(grids[output], task, policy, "qa_em_beam"))
        rows.append(row)
    return rows, ["policy"] + [f"{_short(t)} {o}{b}" for t in spec.tasks for o in OUTPUTS for b in ("", " beam")]


def sections(grids: dict, specs: dict, costs: list[dict], *, with_main: bool = True) -> list[tuple[str, str]]:
    spec = specs[OUTPUTS[0]]
    gaps = []
    for policy in spec.policies:
        gap = {"policy": policy}
        for task in spec.tasks:
            diff = paired_difference(seed_scores(grids["full"], task, policy), seed_scores(grids["spans"], task, policy))
            gap[_short(task)] = format_diff(diff)
        gaps.append(gap)
    out = [(MAIN_HEADING, markdown_table(*main_table(grids, specs)))] if with_main else []
    out.append(("Seq2seq: full - spans per policy, mean [95% CI] over seeds (same seed, same policy); * = interval "
                "excludes zero; no * = no difference shown", markdown_table(gaps, ["policy"] + [_short(t) for t in spec.tasks])))
    for output in OUTPUTS:
        paired = compare_to_random(grids[output], specs[output].tasks, specs[output].policies)
        out += paired.section(f"Seq2seq, output {output}: {HEADING[0].lower()}{HEADING[1:]}", EXPLAIN_AGAIN)
    recall = [{"method": f"learned-{method} ({output})",
               **{_short(t): fmt([c["held_out"]["recall"] for key, c in grids[output]["learned"].get(method, {}).items()
                                  if key.rsplit(" seed ", 1)[0] == t and c["status"] == "done"
                                  and c.get("held_out", {}).get("recall") is not None]) for t in spec.tasks}}
              for output in OUTPUTS for method in ("supervised", "meta") if method in grids[output]["learned"]]
    out.append(("Seq2seq: learned policies' answer recall within the 15% budget, evaluation entities",
                markdown_table(recall, ["method"] + [_short(t) for t in spec.tasks])))
    for output in OUTPUTS:
        # With `spans` the decoder's target is only what is masked, so this is what it learns from.
        out.append((f"Seq2seq, output {output}: what the masks cover ({_short(spec.tasks[0])}, evaluation "
                    "entities' passages, 3 draws per policy; learned rows: mean over the seeds' policies)",
                    markdown_table(mask_rows(grids[output], specs[output],
                                             specs[output].pretrain_options.get("task_options") or {}), MASK_HEADER)))
    reach = []
    for output in OUTPUTS:
        for row in reach_rows(grids[output], specs[output]):
            reach.append({"policy": f"{row.pop('policy')} ({output})", **{_short(k): v for k, v in row.items()}})
    out.append(("Seq2seq: steps to reach random's final denoising cloze EM (fraction of random's steps)",
                markdown_table(reach, ["policy"] + [_short(t) for t in spec.tasks])))
    if costs:
        out.append(("Seq2seq: cost of each output format (side by side, same batches, one process, `random` masks)",
                    markdown_table(costs, COST_HEADER)))
    return out


def _short(task: str) -> str:
    return task.split(":", 1)[-1]


def _metric(grid: dict, task: str, policy: str, key: str) -> list[float]:
    return [c["metrics"][key] for c in grid["cells"] if c["task"] == task and c["policy"] == policy
            and c["status"] == "done" and key in c.get("metrics", {})]


COST_HEADER = ["output", "encoder tokens / row", "decoder tokens / row", "s / step", "target tokens / s",
               "s / step vs spans"]


def format_costs(task_name: str, pretrain_options: dict, *, steps: int, seed: int, batch_size: int = 32) -> list[dict]:
    """Decoder length and training speed of each format: BART tiny, the same ``steps``
    batches (random masks, the same draw for both formats), formats interleaved step by
    step so that the machine's load falls on both alike."""
    import torch

    from maskpolicy.policies.seq2seq_collator import Seq2SeqMaskingCollator
    from maskpolicy.policies import MaskingCollator
    from maskpolicy.tasks.features import encode_passages
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task
    from maskpolicy.train.seq2seq_models import preset_seq2seq_model

    max_length = pretrain_options.get("max_length", 64)
    task = get_task(task_name, **pretrain_options.get("task_options", {}))
    tokenizer = tokenizer_for_task(task)
    data = encode_passages(tokenizer, task.corpus, max_length=max_length, span_splits=())
    pad = MaskingCollator(tokenizer).pad
    batches = [pad([{"input_ids": data[i]["input_ids"]} for i in range(k * batch_size, (k + 1) * batch_size)])
               for k in range(min(steps, len(data) // batch_size))]
    torch.manual_seed(seed)
    models, optimizers, collators = {}, {}, {}
    for output in OUTPUTS:
        torch.manual_seed(seed)
        models[output] = preset_seq2seq_model("tiny", tokenizer, max_length).train()
        optimizers[output] = torch.optim.AdamW(models[output].parameters(), lr=1e-3)
        collators[output] = Seq2SeqMaskingCollator(tokenizer, "random", output=output, model=models[output])
    seconds = {o: [] for o in OUTPUTS}
    lengths = {o: ([], []) for o in OUTPUTS}
    for k, batch in enumerate(batches):
        for output in OUTPUTS:
            inputs = collators[output].corrupt(batch, torch.Generator().manual_seed(seed * 100_003 + k))
            lengths[output][0].append(float(inputs["attention_mask"].sum()) / len(inputs["input_ids"]))
            lengths[output][1].append(float((inputs["labels"] != -100).sum()) / len(inputs["labels"]))
            start = time.perf_counter()
            models[output](**inputs).loss.backward()
            optimizers[output].step()
            optimizers[output].zero_grad()
            seconds[output].append(time.perf_counter() - start)
    rows = []
    base = statistics.median(seconds[OUTPUTS[0]][1:] or seconds[OUTPUTS[0]])
    for output in OUTPUTS:
        step = statistics.median(seconds[output][1:] or seconds[output])  # the first step warms up
        decoder = statistics.fmean(lengths[output][1])
        rows.append({"output": output, "encoder tokens / row": f"{statistics.fmean(lengths[output][0]):.1f}",
                     "decoder tokens / row": f"{decoder:.1f}", "s / step": f"{step:.3f}",
                     "target tokens / s": f"{decoder * batch_size / step:.0f}", "s / step vs spans": f"{step / base:.2f}",
                     "_seconds": step, "_decoder": decoder})
    return rows


def records(grids: dict) -> dict:
    """For ``results.json``: each format's cells and learned policies."""
    return {output: {"cells": g["cells"], "learned": g["learned"]} for output, g in grids.items()}
