"""What a learner's network option does to what its policy selects, over family worlds.

Learns one policy per (world, option value) without downstream validation and reports, on
the evaluation subjects' passages (never seen by the learner), the precision of the tokens
it selects (p >= 0.5) against the answer tokens, its answer recall within the budget, and
the share of subject tokens (the passage's key) it selects. Cheap (the supervised learner
takes seconds a world), so an option's default can be chosen over many worlds:

    python -m maskpolicy.benchmarks.selection_sweep --option token_dropout --values 0,0.15,0.3,0.5 \\
        --worlds 0-7 --method supervised --out runs/sweep-token-dropout
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from maskpolicy.policies.errors import ConfigError
from maskpolicy.tasks.family import main_task
from maskpolicy.tasks.registry import get_task

from .tables import markdown_table


def parse_worlds(text: str) -> list[int]:
    """"0-7" or "0,3,100-102" -> world seeds."""
    worlds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        if not low.strip().isdigit() or (high and not high.strip().isdigit()):
            raise ConfigError(f"--worlds: expected seeds such as 0-7 or 0,3,100-102, got {text!r}")
        worlds += list(range(int(low), int(high or low) + 1))
    return worlds


@torch.no_grad()
def subject_selected(policy, tokenizer, task, max_length: int = 64) -> float:
    """Share of the key (subject) tokens in the evaluation passages with p >= 0.5."""
    from maskpolicy.meta.labels import KEEP, answer_span_labels

    data = answer_span_labels(task, tokenizer, max_length=max_length, split="eval", mark_keys=True)
    hit = total = 0
    for row in data:
        subject = [i for i, label in enumerate(row["token_labels"]) if label == KEEP]
        if not subject:
            continue
        ids = torch.tensor([row["input_ids"]])
        probs = policy(ids, torch.ones_like(ids))[0]
        hit += int((probs[subject] >= 0.5).sum())
        total += len(subject)
    return hit / total if total else float("nan")


def sweep(option: str, values: list, worlds: list[int], method: str, out: str, seed: int = 0) -> list[dict]:
    from maskpolicy.meta.learn import LearnConfig, learn
    from maskpolicy.policies import LearnedPolicy

    rows = []
    for world in worlds:
        task_name = main_task(world)
        task = get_task(task_name)
        for value in values:
            target = os.path.join(out, f"w{world}", f"{option}-{value}")
            started = time.perf_counter()
            report = learn(LearnConfig(task=task_name, method=method, out=target, seed=seed, progress=False,
                                       policy_options={option: value}, validate={"enabled": False}))
            policy = LearnedPolicy.from_pretrained(target)
            held = report.get("held_out") or {}
            rows.append({"world": world, "task": task_name, option: value,
                         "precision": held.get("threshold_precision"), "recall": held.get("recall"),
                         "subject": subject_selected(policy, policy.tokenizer, task),
                         "seconds": round(time.perf_counter() - started, 1)})
    return rows


def summary(rows: list[dict], option: str, values: list) -> list[dict]:
    out = []
    for value in values:
        mine = [r for r in rows if r[option] == value]
        out.append({option: str(value), **{k: f"{statistics.fmean(r[k] for r in mine):.3f} (min "
                                              f"{min(r[k] for r in mine):.3f})"
                                           for k in ("precision", "recall", "subject")}})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--option", required=True, help="a LearnedPolicy option, e.g. token_dropout")
    parser.add_argument("--values", required=True, help="comma-separated values (numbers)")
    parser.add_argument("--worlds", default="0-7")
    parser.add_argument("--method", default="supervised", choices=["supervised", "meta"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    values = [json.loads(v) for v in args.values.split(",")]
    rows = sweep(args.option, values, parse_worlds(args.worlds), args.method, args.out)
    table = markdown_table(summary(rows, args.option, values), [args.option, "precision", "recall", "subject"])
    per_world = markdown_table([{k: (f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in r.items()}
                                for r in rows], list(rows[0]))
    text = (f"{args.method} policies, worlds {args.worlds}, {args.option} in {args.values}: mean (min) over worlds of "
            f"the threshold precision, the budgeted answer recall and the subject tokens selected, on the "
            f"evaluation subjects' passages\n\n{table}\n\n{per_world}\n")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sweep.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
