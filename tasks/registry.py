"""Tasks by name: ``get_task("synthetic:birthplace")``, ``get_task("mr", data_dir=...)``,
or ``get_task("path/to/task_dir")`` for a task defined in files (see ``files.py``).

Names: ``synthetic`` (every relation of the synthetic world), ``synthetic:<relation>``,
``synthetic-family:<world>[:<relation>]`` (a drawn world of the family, ``family.py``),
the real sets of ``real.py`` (read from ``data_dir`` / ``$MASKPOLICY_DATA_DIR``), or a path.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import fields

from maskpolicy.policies.errors import ConfigError, DataError

from .base import Task
from .family import PREFIX as FAMILY, build_family_task, parse_family_name
from .files import load_task_from_files
from .real import REAL_TASKS, load_real_task
from .synthetic import TEMPLATES, SyntheticWorldConfig, build_synthetic_task

_SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def available_tasks() -> list[str]:
    return ["synthetic"] + [f"synthetic:{r}" for r in TEMPLATES] + [f"{FAMILY}:<world>[:<relation>]"] + list(REAL_TASKS)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith(_SPEC_SUFFIXES) or name.startswith(".")


def _builder_options(builder, *filled: str) -> set[str]:
    """The options a task builder really takes: its parameters less those ``get_task`` fills
    itself (name, path, data_dir). Derived, so the list in errors cannot drift from the code."""
    return set(inspect.signature(builder).parameters) - set(filled)


def _check_options(name: str, options: dict, allowed: set[str]) -> None:
    """``options`` lacks ``seed`` (get_task takes it itself); ``allowed`` includes it, so the
    error lists every option a user can give."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for task {name!r}; "
                          f"allowed: {', '.join(sorted(allowed)) or 'none'}")


def get_task(name_or_path: str, data_dir: str | None = None, seed: int = 0, **options) -> Task:
    """Build a task. ``seed`` is the *data* seed (the synthetic world, the seeded splits and
    samples of real sets), deliberately not a run's seed: runs with seeds 0, 1, 2 train on the
    same data and share one tokenizer, so a policy learned once serves all of them.
    ``options`` go to the builder: ``SyntheticWorldConfig`` fields (``num_entities``,
    ``eval_fraction``, ...) for synthetic tasks, ``FamilyKnobs`` fields for family worlds
    (a knob fixed by hand), ``max_words`` / ``max_corpus_passages``
    for real ones; file tasks take none."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"the task's data seed must be an int, got {seed!r}")
    name = str(name_or_path)
    if name == "synthetic" or name.startswith("synthetic:"):
        relation = name.split(":", 1)[1] if ":" in name else None
        if relation is not None and relation not in TEMPLATES:
            raise ConfigError(f"unknown synthetic relation {relation!r}; known: "
                              f"{', '.join('synthetic:' + r for r in TEMPLATES)}")
        _check_options(name, options, {f.name for f in fields(SyntheticWorldConfig)})
        task = build_synthetic_task(relation, SyntheticWorldConfig(seed=seed, **options))
    elif name.startswith(FAMILY + ":"):
        world, relation = parse_family_name(name)
        task = build_family_task(world, relation, seed=seed, **options)
    elif name in REAL_TASKS:
        _check_options(name, options, _builder_options(load_real_task, "name", "data_dir"))
        task = load_real_task(name, data_dir=data_dir, seed=seed, **options)
    elif os.path.exists(name) or _looks_like_path(name):
        _check_options(name, options, _builder_options(load_task_from_files, "path"))
        task = load_task_from_files(name, seed=seed)
    else:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(available_tasks())}; "
                          "a path to a task directory (with task.yaml / task.json) also works")
    if not task.corpus:
        raise DataError(f"task {task.name} has an empty corpus")
    return task
