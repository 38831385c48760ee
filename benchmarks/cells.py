"""One benchmark cell = one run with its own directory; the unit of resuming and of failure.

A cell is finished when its result file exists and records the same configuration and the
same digests of the directories it read (``input_digests``: a saved policy, a starting
model, a tokenizer, a classifier): a re-run of the suite reads it back instead of training
again. A cell that raises is
recorded as failed (``failed.json`` with the error) and the suite goes on; the next run of
the suite tries it again. Kinds:

- ``pretrain``: intermediate pre-training with a policy, then evaluation (``results.json``);
- ``learn``: learning a policy network (``policy/`` + ``report.json``);
- ``baseline``: no intermediate pre-training, the starting model evaluated as it is
  (``results.json``, same format as ``pretrain``; the "none" row of a policy grid);
- ``finetune``: adapting a model to a task by a method (full / head / mask; ``results.json``).

``run_cells`` runs a list of cells in order, or in ``workers`` processes of one thread each
(on 2 cores two one-thread workers finish about 1.3x more cells per minute than one
two-thread run: the tiny models are overhead-bound, not FLOP-bound).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import traceback

from maskpolicy.train.checkpoint import write_json_atomic

FAILED_FILE = "failed.json"


def _comparable(config: dict) -> dict:
    """What decides a cell's result, as it reads back from JSON (tuples become lists);
    progress bars and how the output directory is taken do not count, nor options added
    since a cell was written while they hold their default."""
    ignored = {"progress", "overwrite", "resume"}
    # Each option added later with the value(s) that mean what a cell written before it did.
    defaults = {"mixed_precision": ("no",), "arch": ("mlm",), "output": (None, "spans"), "qa": (None,)}
    nested_defaults = {("supervised", "classifier", "max_train_examples"): None, ("meta", "output"): "spans",
                       ("meta", "outer"): "cloze",
                       ("finetune", "method"): "full", ("probe", "method"): "full"}
    removed = [("mask", "head_learning_rate")]  # options since removed (unused), whatever their value
    config = json.loads(json.dumps({k: v for k, v in config.items()
                                    if k not in ignored and not (k in defaults and v in defaults[k])}))
    for path, default in nested_defaults.items():
        inner = config
        for key in path[:-1]:
            inner = inner.get(key) if isinstance(inner, dict) else None
        if isinstance(inner, dict) and path[-1] in inner and inner[path[-1]] == default:
            del inner[path[-1]]
    for outer, key in removed:
        if isinstance(config.get(outer), dict):
            config[outer].pop(key, None)
    return config


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None  # absent or half-written by a killed run: redo the cell


def _failure(out_dir: str, config: dict, err: BaseException) -> dict:
    record = {"status": "failed", "error": f"{type(err).__name__}: {err}", "config": config,
              "traceback": traceback.format_exc(limit=8)}
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, FAILED_FILE), record)
    return record


def _clear_failure(out_dir: str) -> None:
    try:
        os.remove(os.path.join(out_dir, FAILED_FILE))
    except FileNotFoundError:
        pass


def dir_digest(path: str | None) -> str | None:
    """SHA-256 over a directory's files (None for a name such as a preset or a heuristic)."""
    if not isinstance(path, str) or not os.path.isdir(path):
        return None
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            digest.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as fh:
                digest.update(fh.read())
    return digest.hexdigest()


def input_digests(config: dict) -> dict[str, str]:
    """Digests of the directories a cell reads (saved policy, starting model, tokenizer,
    classifier): a policy re-learned or a general model re-trained into the same directory
    makes the cells that used it stale, although their configs read the same."""
    paths = {"policy": config.get("policy"), "model": config.get("model"), "tokenizer": config.get("tokenizer"),
             "classifier": ((config.get("supervised") or {}).get("classifier") or {}).get("model")}
    return {name: d for name, d in ((name, dir_digest(p)) for name, p in paths.items()) if d is not None}


def pretrain_cell(config) -> dict:
    """``train.pretrain`` for a ``PretrainConfig``; ``{"status": "done"|"failed", ...}``.
    A finished cell is reused when its config and, for a saved policy, the policy's files
    are unchanged."""
    from maskpolicy.train.pretrain import RESULTS_FILE, pretrain

    wanted = config.to_dict()
    digests = input_digests(wanted)
    path = os.path.join(config.out, RESULTS_FILE)
    done = _read(path)
    if (done and _comparable(done.get("config") or {}) == _comparable(wanted) and "metrics" in done
            and done.get("input_digests") == digests):
        return {"status": "done", "reused": True, **done}
    if (done and "metrics" in done and done.get("input_digests") == digests
            and _training_part(done.get("config") or {}) == _training_part(wanted)
            and os.path.isfile(os.path.join(config.out, "model", "config.json"))):
        # Only how the trained model is evaluated changed: evaluate the saved model again.
        try:
            metrics = final_evaluation(config)
        except Exception as err:  # noqa: BLE001
            return _failure(config.out, wanted, err)
        result = {**done, "config": wanted, "metrics": metrics,
                  "reevaluated": sorted(k for k in EVALUATION_ONLY if (done["config"].get(k) != wanted.get(k)))}
        write_json_atomic(path, result)
        _clear_failure(config.out)
        return {"status": "done", "reused": False, **result}
    try:
        result = pretrain(dataclasses.replace(config, overwrite=True))  # the cell decided to redo it
    except Exception as err:  # noqa: BLE001 - a failed cell must not stop the grid
        return _failure(config.out, wanted, err)
    result["input_digests"] = digests
    write_json_atomic(path, result)
    _clear_failure(config.out)
    return {"status": "done", "reused": False, **result}


# Options that decide only the final evaluation of a pre-trained model, not its training: a
# cell whose configuration differs in these alone is evaluated again from its saved model.
EVALUATION_ONLY = ("qa", "finetune")


def _training_part(config: dict) -> dict:
    return {k: v for k, v in _comparable(config).items() if k not in EVALUATION_ONLY}


def final_evaluation(config) -> dict:
    """The final evaluation of the model a pre-training run saved in ``config.out/model``,
    as ``train.pretrain`` computes it at the end of the run (same objective, same seed)."""
    from maskpolicy.policies import get_policy
    from maskpolicy.train.data import load_task
    from maskpolicy.train.models import load_tokenizer
    from maskpolicy.train.objectives import load_trained, objective_for

    model_dir = os.path.join(config.out, "model")
    task = load_task(config)
    tokenizer = load_tokenizer(model_dir)
    objective = objective_for(config, get_policy("random", tokenizer), tokenizer)
    model = load_trained(config.arch, model_dir)
    return objective.evaluate(model, tokenizer, task, quick=False, progress=config.progress)


def baseline_cell(config) -> dict:
    """Evaluate ``config.model`` (a preset initialised with ``config.seed``, or a checkpoint)
    on ``config.task`` without any intermediate step; written like a pretrain cell."""
    from maskpolicy.train.pretrain import RESULTS_FILE

    wanted = {**config.to_dict(), "steps": 0}
    digests = input_digests(wanted)
    done = _read(os.path.join(config.out, RESULTS_FILE))
    if (done and _comparable(done.get("config") or {}) == _comparable(wanted) and "metrics" in done
            and done.get("input_digests") == digests):
        return {"status": "done", "reused": True, **done}
    try:
        result = _evaluate_start_model(config, wanted)
    except Exception as err:  # noqa: BLE001
        return _failure(config.out, wanted, err)
    result["input_digests"] = digests
    write_json_atomic(os.path.join(config.out, RESULTS_FILE), result)
    _clear_failure(config.out)
    return {"status": "done", "reused": False, **result}


def _evaluate_start_model(config, wanted: dict) -> dict:
    """The start model (a preset initialised with the seed, or the checkpoint) evaluated as
    the run's objective would evaluate it at the end (masked LM or seq2seq)."""
    import torch

    from maskpolicy.policies import get_policy
    from maskpolicy.train.data import load_task, resolve_tokenizer
    from maskpolicy.train.objectives import objective_for

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    task = load_task(config)
    tokenizer = resolve_tokenizer(config, task)
    objective = objective_for(config, get_policy("random", tokenizer), tokenizer)
    model, _ = objective.build_model(tokenizer)
    metrics = objective.evaluate(model, tokenizer, task, quick=False, progress=config.progress)
    start = {"step": 0, **objective.evaluate(model, tokenizer, task, quick=True)}
    return {"config": wanted, "policy": {"name": "none"}, "history": [start], "steps": 0, "train_seconds": 0.0,
            "metrics": metrics, "wall_seconds": round(time.perf_counter() - started, 2)}


def learn_cell(config) -> dict:
    """``meta.learn`` for a ``LearnConfig`` whose ``out`` is the cell's ``policy/`` dir."""
    from maskpolicy.meta.learn import learn

    cell_dir = os.path.dirname(os.path.abspath(config.out))
    report_path = os.path.join(cell_dir, "report.json")
    wanted = config.to_dict()
    digests = input_digests({**wanted, "policy": None})  # the policy dir is this cell's output
    done = _read(report_path)
    if (done and _comparable(done.get("config") or {}) == _comparable(wanted) and done.get("input_digests") == digests
            and os.path.isfile(os.path.join(config.out, "policy_config.json"))):
        return {"status": "done", "reused": True, **done}
    started = time.perf_counter()
    try:
        report = learn(config)
    except Exception as err:  # noqa: BLE001
        return _failure(cell_dir, wanted, err)
    record = {"config": wanted, "input_digests": digests, "policy": config.out,
              "seconds": round(time.perf_counter() - started, 2),
              "held_out": report.get("held_out") or report.get("metrics") or {},
              "validation": _validation_summary(report.get("validation") or {})}
    write_json_atomic(report_path, record)
    _clear_failure(cell_dir)
    return {"status": "done", "reused": False, **record}


def _validation_summary(validation: dict) -> dict:
    """The kept candidate's downstream validation (scores, gains over the baseline, mask shares)."""
    if "candidates" not in validation:
        return validation
    fill = validation.get("selected_fill")
    kept = next(c for c in validation["candidates"] if c["candidate"] == validation["selected"]
                and c.get("fill") == fill)
    return {"selected": validation["selected"], "selected_fill": fill, "candidates": len(validation["candidates"]),
            "baseline": validation["baseline"], "kept": kept, "seconds": validation["seconds"]}


def safe_name(text: str) -> str:
    """A directory name for a task or policy name ("synthetic:birthplace" -> "synthetic_birthplace")."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(os.path.normpath(text)))


def learn_config(task: str, method: str, seed: int, root: str, options: dict | None = None, progress: bool = False):
    """The ``LearnConfig`` of the cell ``root/policies/<task>/<method>/seed<k>`` (policy in ``policy/``)."""
    from maskpolicy.meta.learn import LearnConfig

    cell_dir = os.path.join(root, "policies", safe_name(task), method, f"seed{seed}")
    return LearnConfig.from_dict({**(options or {}), "task": task, "method": method, "seed": seed,
                                  "out": os.path.join(cell_dir, "policy"), "progress": progress})


def learned_policies(tasks: list[str], method: str, seeds: list[int], root: str, *, options: dict | None = None,
                     progress: bool = False, workers: int = 1) -> dict[tuple[str, int], dict]:
    """Learn (or read back) one policy per (task, seed) under ``root/policies``; returns
    ``{(task, seed): cell}`` where a done cell's ``policy`` is the policy directory."""
    keys = [(task, seed) for task in tasks for seed in seeds]
    jobs = [("learn", learn_config(task, method, seed, root, options, progress and workers <= 1)) for task, seed in keys]
    return dict(zip(keys, run_cells(jobs, workers)))

# 2: the seed initialises the new head (before, the head's initialisation followed whatever
# the process had drawn before it); cells of version 1 are run again.
FINETUNE_CELL_VERSION = 2


def finetune_cell(config) -> dict:
    """``train.finetune_run`` for a ``FinetuneRunConfig`` (full / head / mask on a task);
    reused when its config and its base model's files are unchanged."""
    from maskpolicy.train.finetune_run import run_finetune

    wanted = dataclasses.asdict(config)
    digests = input_digests({"model": config.model})
    path = os.path.join(config.out, "results.json")
    done = _read(path)
    if (done and _comparable(done.get("config") or {}) == _comparable(wanted) and "metrics" in done
            and done.get("input_digests") == digests and done.get("cell_version") == FINETUNE_CELL_VERSION):
        return {"status": "done", "reused": True, **done}
    try:
        result = run_finetune(dataclasses.replace(config, overwrite=True, progress=False))
    except Exception as err:  # noqa: BLE001
        return _failure(config.out, wanted, err)
    result["input_digests"] = digests
    result["cell_version"] = FINETUNE_CELL_VERSION
    write_json_atomic(path, result)
    _clear_failure(config.out)
    return {"status": "done", "reused": False, **result}


_RUNNERS = {"pretrain": pretrain_cell, "learn": learn_cell, "baseline": baseline_cell, "finetune": finetune_cell}


def _run_one(job: tuple[str, object]) -> dict:
    kind, config = job
    return _RUNNERS[kind](config)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_cells(jobs: list[tuple[str, object]], workers: int = 1) -> list[dict]:
    """Run ``(kind, config)`` cells (kind: pretrain | learn | baseline); results in job order.
    Cells must be independent of each other (learn before the pretrain cells that use them)."""
    if workers <= 1 or len(jobs) <= 1:
        return [_run_one(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (fork after torch has started threads can hang)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        return list(pool.map(_run_one, jobs))
