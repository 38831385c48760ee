"""What weight masking costs and where it lands, for the ``weightmask`` suite.

- ``serving_rows``: bytes of tensors held by a ``MaskBank`` of N task adapters on one base
  against one plain task model, for N in the preset's list (the adapters of the suite's
  cells, reused in turn when N exceeds them: the bytes per task do not depend on which).
- ``step_time_rows``: seconds per training step of full fine-tuning, masking and head
  training on the same batches, interleaved in one process (so that load on the machine
  hits all three alike); median over the steps after two warm-up steps.
- ``interpolation_rows``: accuracy along the line from the masked to the fine-tuned
  model of seed 0 (``train/weightmask/interpolate.py``), with a PNG per start and task.
"""
from __future__ import annotations

import os
import statistics
import time

import torch

from maskpolicy.tasks.registry import get_task
from maskpolicy.train.adapt import evaluate_task_model, step_loss, train_loader
from maskpolicy.train.finetune_run import load_base
from maskpolicy.train.methods import get_method
from maskpolicy.train.task_models import TaskModel, build_task_model
from maskpolicy.train.weightmask import WeightMaskConfig, load_adapted, read_adapter_config
from maskpolicy.train.weightmask.artifact import base_task_model
from maskpolicy.train.weightmask.bank import MaskBank
from maskpolicy.train.weightmask.interpolate import interpolate_accuracy

from .plots import curves


def _tensor_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _adapters(cells: dict, start: str) -> list[str]:
    return [os.path.join(c["config"]["out"], "adapter") for (s, _, method, _), c in sorted(cells.items(), key=str)
            if s == start and method == "mask" and c.get("status") == "done"]


def serving_rows(cells: dict, size: dict, models: dict) -> list[dict]:
    rows = []
    for start in (s for s in size["starts"] if s in models):
        adapters = _adapters(cells, start)
        if not adapters:
            continue
        plain, _ = base_task_model(read_adapter_config(adapters[0]), models[start])
        single = _tensor_bytes(plain.model)  # one ordinary task model: what each fine-tuned copy costs
        for n in size["serving"]:
            bank = MaskBank.from_adapters({f"task{i}": adapters[i % len(adapters)] for i in range(n)})
            bank.activate("task0")
            held = bank.memory_bytes()["total"]
            rows.append({"start": start, "N": n, "bank bytes": f"{held:,}", "bank / one model": f"{held / single:.3f}",
                         "N fine-tuned copies / one model": f"{n:.3f}", "bound 1 + 0.05 N": f"{1 + 0.05 * n:.3f}"})
    return rows


def _timing_model(lm, task, method: str, mask: WeightMaskConfig) -> tuple[TaskModel, list[dict]]:
    torch.manual_seed(0)
    tm = build_task_model(lm, task)
    groups = get_method(method).prepare(tm, learning_rate=1e-4, head_learning_rate=1e-3, mask=mask, seed=0)
    tm.model.train()
    return tm, groups


def step_time_rows(size: dict, models: dict, data_dir: str | None) -> list[dict]:
    rows = []
    for start in (s for s in size["starts"] if s in models):
        task_name = size["starts"][start]["tasks"][0]
        task = get_task(task_name, **({"data_dir": data_dir, "max_words": 30} if task_name in ("mr", "sst2") else {}))
        lm, _, tokenizer = load_base(models[start], None, 64)
        runs = {m: _timing_model(lm, task, m, WeightMaskConfig(**size["mask"])) for m in ("full", "mask", "head")}
        loader = train_loader(runs["full"][0], tokenizer, task, max_length=64, batch_size=32, max_train_examples=None,
                              seed=0)
        optimizers = {m: torch.optim.AdamW(groups) for m, (_, groups) in runs.items()}
        times = {m: [] for m in runs}
        for i, batch in enumerate(loader):
            if i >= size["timing_steps"] + 2:
                break
            for method, (tm, _) in runs.items():
                optimizer = optimizers[method]
                begin = time.perf_counter()
                step_loss(tm, batch).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if i >= 2:
                    times[method].append(time.perf_counter() - begin)
        median = {m: statistics.median(v) for m, v in times.items()}
        rows.append({"start": start, "full s/step": f"{median['full']:.4f}", "mask s/step": f"{median['mask']:.4f}",
                     "head s/step": f"{median['head']:.4f}", "mask / full": f"{median['mask'] / median['full']:.2f}"})
    return rows


def interpolation_rows(cells: dict, size: dict, models: dict, out: str) -> tuple[list[dict], list[str]]:
    rows, plots = [], []
    for start in (s for s in size["starts"] if s in models):
        for task_name in size["starts"][start]["tasks"]:
            key = task_name.replace(":", "_")
            mask_cell = next((c for (s, t, m, k), c in cells.items() if (s, t, m) == (start, task_name, "mask")
                              and k == 0 and c.get("status") == "done"), None)
            full_cell = next((c for (s, t, m, k), c in cells.items() if (s, t, m) == (start, task_name, "full")
                              and k == 0 and c.get("status") == "done"), None)
            if mask_cell is None or full_cell is None:
                continue
            masked, tokenizer = load_adapted(os.path.join(mask_cell["config"]["out"], "adapter"))
            full, _ = load_adapted_full(os.path.join(full_cell["config"]["out"], "model"), masked)
            task = get_task(task_name, **mask_cell["config"]["task_options"],
                            **({"data_dir": mask_cell["config"]["data_dir"]} if mask_cell["config"]["data_dir"] else {}))

            def score(model):
                probe = TaskModel(model=model, kind=masked.kind, head=masked.head, base_fingerprint="")
                return evaluate_task_model(probe, tokenizer, task, max_length=mask_cell["config"]["max_length"])["score"]

            line = interpolate_accuracy(masked.model, full, score)
            rows.append({"start": start, "task": task_name, **{f"{r['alpha']:.1f}": f"{r['score']:.3f}" for r in line}})
            path = curves({"seed 0": ([r["alpha"] for r in line], [r["score"] for r in line], [0.0] * len(line))},
                          os.path.join(out, f"interpolation_{start}_{key}.png"),
                          f"{start} / {task_name}: masked (0) to fine-tuned (1)", xlabel="alpha", ylabel="score")
            if path:
                plots.append(path)
    return rows, plots


def load_adapted_full(directory: str, like: TaskModel):
    """The fully fine-tuned model of a ``full`` cell, of the same class as ``like``."""
    model = type(like.model).from_pretrained(directory).eval()
    return model, None
