"""Transfer matrix: the policy learned on task A drives intermediate pre-training for task B.

For every source A and target B of a suite (same tokenizer family, e.g. the relations of
one synthetic world), ``score[A][B]`` is B's downstream score after pre-training with A's
learned policy, at the same steps, batch, budget and seed as B's own policy (the diagonal)
and as ``random``. Each cell is reported next to both references:

- ``vs own``  = score[A][B] / score[B][B];
- ``gain kept`` = (score[A][B] - random[B]) / (score[B][B] - random[B]): the share of B's own
  policy's gain over random that A's policy also gets (1 = as good as B's own, 0 = no
  better than random; undefined when B's own policy does not beat random).
"""
from __future__ import annotations

import math
import os

from maskpolicy.policies.errors import ConfigError

from .cells import learned_policies, run_cells, safe_name
from .grid import GridSpec, pretrain_config
from .plots import heatmap
from .tables import csv_text, fmt, markdown_table, mean_std, write_text


def check_transfer_seeds(requested: int | None, preset: int, seeds: list[int]) -> int:
    """How many of ``seeds`` the transfer matrix runs on: ``requested`` (--transfer-seeds) or the
    preset's count; more than the grid has would need policies the grid never learned; 0 runs no
    transfer matrix."""
    if requested is None:
        return min(preset, len(seeds))
    if not 0 <= requested <= len(seeds):
        raise ConfigError(f"--transfer-seeds {requested}: must be between 0 (no transfer matrix) and the number of "
                          f"seeds ({len(seeds)})")
    return requested


def _score(cell: dict) -> float:
    return float(cell["metrics"]["score"]) if cell.get("status") == "done" else math.nan


def run_transfer(tasks: list[str], *, root: str, steps: int, seeds: list[int], method: str = "meta",
                 pretrain_options: dict | None = None, learn_options: dict | None = None,
                 eval_points: int = 20, workers: int = 1, progress: bool = False,
                 per_task: dict[str, tuple[dict, dict]] | None = None) -> dict:
    """Learn each task's policy, pre-train every target with every source's policy and with
    ``random``; write ``transfer.md``, ``transfer.csv`` and ``transfer.png`` under ``root``.
    Cells are laid out and configured as in the policy grid (``grid.py``), so a suite that
    runs both trains the diagonal and the ``random`` row once. ``per_task``: task ->
    (pretrain options as a target, learn options as a source) where tasks differ (the real
    suite: probes for MR / SST-2, longer sequences for SQuAD); default: the shared ones."""
    per_task = per_task or {}

    def spec_for(task: str) -> GridSpec:
        options = per_task.get(task, (pretrain_options or {}, learn_options or {}))
        return GridSpec(tasks=[task], policies=["random"], seeds=seeds, steps=steps, eval_points=eval_points,
                        pretrain_options=options[0], learn_options=options[1], workers=workers)

    specs = {task: spec_for(task) for task in tasks}
    policies = {}
    for task in tasks:
        policies.update(learned_policies([task], method, seeds, root, options=specs[task].learn_options,
                                         progress=progress, workers=workers))
    failures: list[dict] = []
    keys, jobs = [], []
    for target in tasks:
        for source in ["random"] + tasks:
            for seed in seeds:
                learned = policies.get((source, seed))
                if learned is not None and learned["status"] != "done":
                    failures.append({"cell": f"learn {source} seed {seed}", "error": learned["error"]})
                    continue
                policy = learned["policy"] if learned is not None else source
                name = "random" if learned is None else f"learned-{method}-{safe_name(source)}"
                keys.append((source, target, seed, name))
                jobs.append(("pretrain", pretrain_config(specs[target], root, target, name, policy, seed)))
    done = {}
    for (source, target, seed, name), cell in zip(keys, run_cells(jobs, workers)):
        if cell["status"] != "done":
            failures.append({"cell": f"{target} <- {name} seed {seed}", "error": cell["error"]})
        done[(source, target, seed)] = _score(cell)
    cells = {(source, target): [done.get((source, target, seed), math.nan) for seed in seeds]
             for target in tasks for source in ["random"] + tasks}
    return _report(tasks, cells, failures, root, steps, seeds, method)


def _report(tasks, cells, failures, root, steps, seeds, method) -> dict:
    rows, matrix, gain = [], [], []
    for source in tasks + ["random"]:
        row = {"policy from": source if source == "random" else f"{source} ({method})"}
        matrix.append([])
        gain.append([])
        for target in tasks:
            scores = cells[(source, target)]
            own, rnd = mean_std(cells[(target, target)])[0], mean_std(cells[("random", target)])[0]
            mean = mean_std(scores)[0]
            kept = (mean - rnd) / (own - rnd) if own - rnd > 1e-9 else math.nan
            row[target] = fmt(scores)
            row[f"{target} vs own"] = f"{mean / own:.2f}" if own > 0 and not math.isnan(mean) else "n/a"
            row[f"{target} gain kept"] = "n/a" if math.isnan(kept) else f"{kept:.2f}"
            matrix[-1].append(mean)
            gain[-1].append(kept)
        rows.append(row)
    header = ["policy from"] + tasks
    detail = ["policy from"] + [f"{t}{suffix}" for t in tasks for suffix in ("", " vs own", " gain kept")]
    title = (f"transfer: rows = whose learned policy ({method}), columns = the task pre-trained and scored; "
             f"{steps} intermediate steps, seeds {', '.join(map(str, seeds))}")
    table = title + "\n\n" + markdown_table(rows, header) + "\n\ngain kept = (score - random) / (own - random)\n\n" \
        + markdown_table(rows, detail)
    write_text(root, "transfer.md", table + "\n")
    write_text(root, "transfer.csv", csv_text(rows, detail))
    labels = [f"{s}" for s in tasks] + ["random"]
    pngs = [heatmap(matrix, labels, tasks, os.path.join(root, "transfer.png"),
                    "score: policy learned on (rows) -> task pre-trained (cols)"),
            heatmap(gain[:-1], tasks, tasks, os.path.join(root, "transfer_gain.png"),
                    "gain kept = (score - random) / (own - random)", label="gain kept")]
    return {"table": table, "rows": rows, "scores": {f"{s} -> {t}": v for (s, t), v in cells.items()},
            "failures": failures, "png": [p for p in pngs if p]}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Transfer matrix across the relations of the synthetic world.")
    parser.add_argument("--tasks", default="synthetic:birthplace,synthetic:profession,synthetic:colour,synthetic:employer")
    parser.add_argument("--root", default="runs/bench-synthetic")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--method", default="meta", choices=["meta", "supervised"])
    parser.add_argument("--workers", type=int, default=1, help="cells run in this many one-thread processes")
    args = parser.parse_args(argv)
    report = run_transfer([t.strip() for t in args.tasks.split(",")], root=args.root, steps=args.steps,
                          seeds=[int(s) for s in args.seeds.split(",")], method=args.method,
                          workers=args.workers)
    print(report["table"])
    for failure in report["failures"]:
        print(f"failed: {failure['cell']}: {failure['error']}")
    print(f"wrote {args.root}/transfer.md")


if __name__ == "__main__":
    main()
