"""One benchmark cell = one run with its own directory; the unit of resuming and of failure.

A cell is finished when its result file exists and records the same configuration: a
re-run of the suite reads it back instead of training again. A cell that raises is
recorded as failed (``failed.json`` with the error) and the suite goes on; the next run of
the suite tries it again. Two kinds:

- ``pretrain``: intermediate pre-training with a policy, then evaluation (``results.json``);
- ``learn``: learning a policy network (``policy/`` + ``report.json``).
"""
from __future__ import annotations

import json
import os
import time
import traceback

from train.checkpoint import write_json_atomic

FAILED_FILE = "failed.json"


def _comparable(config: dict) -> dict:
    """What decides a cell's result, as it reads back from JSON (tuples become lists);
    progress bars do not count."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k != "progress"}))


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


def pretrain_cell(config) -> dict:
    """``train.pretrain`` for a ``PretrainConfig``; ``{"status": "done"|"failed", ...}``."""
    from train.pretrain import RESULTS_FILE, pretrain

    wanted = config.to_dict()
    done = _read(os.path.join(config.out, RESULTS_FILE))
    if done and _comparable(done.get("config") or {}) == _comparable(wanted) and "metrics" in done:
        return {"status": "done", "reused": True, **done}
    try:
        result = pretrain(config)
    except Exception as err:  # noqa: BLE001 - a failed cell must not stop the grid
        return _failure(config.out, wanted, err)
    _clear_failure(config.out)
    return {"status": "done", "reused": False, **result}


def learn_cell(config) -> dict:
    """``meta.learn`` for a ``LearnConfig`` whose ``out`` is the cell's ``policy/`` dir."""
    from meta.learn import learn

    cell_dir = os.path.dirname(os.path.abspath(config.out))
    report_path = os.path.join(cell_dir, "report.json")
    wanted = config.to_dict()
    done = _read(report_path)
    if done and _comparable(done.get("config") or {}) == _comparable(wanted) and os.path.isfile(os.path.join(config.out, "policy_config.json")):
        return {"status": "done", "reused": True, **done}
    started = time.perf_counter()
    try:
        report = learn(config)
    except Exception as err:  # noqa: BLE001
        return _failure(cell_dir, wanted, err)
    record = {"config": wanted, "policy": config.out, "seconds": round(time.perf_counter() - started, 2),
              "held_out": report.get("held_out") or report.get("metrics") or {}}
    write_json_atomic(report_path, record)
    _clear_failure(cell_dir)
    return {"status": "done", "reused": False, **record}


def safe_name(text: str) -> str:
    """A directory name for a task or policy name ("synthetic:birthplace" -> "synthetic_birthplace")."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(os.path.normpath(text)))


def learned_policies(tasks: list[str], method: str, seeds: list[int], root: str, *, options: dict | None = None,
                     progress: bool = False) -> dict[tuple[str, int], dict]:
    """Learn (or read back) one policy per (task, seed) under ``root/policies``; returns
    ``{(task, seed): cell}`` where a done cell's ``policy`` is the policy directory."""
    from meta.learn import LearnConfig

    out = {}
    for task in tasks:
        for seed in seeds:
            cell_dir = os.path.join(root, "policies", safe_name(task), method, f"seed{seed}")
            config = LearnConfig.from_dict({**(options or {}), "task": task, "method": method, "seed": seed,
                                            "out": os.path.join(cell_dir, "policy"), "progress": progress})
            out[(task, seed)] = learn_cell(config)
    return out
