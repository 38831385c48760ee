"""Everything a pre-training run needs before the loop: task, tokenizer, dataset, policy.

Tokenizer choice, in order: ``--tokenizer`` (a directory, hub name or WordPiece vocab
file); the tokenizer saved with ``--model`` when it is a checkpoint; else a WordPiece
tokenizer trained on the task's texts (deterministic, saved with the model).
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow.compute as pc

from maskpolicy.policies import MaskingPolicy, get_policy
from maskpolicy.policies.errors import DataError
from maskpolicy.tasks.base import Task
from maskpolicy.tasks.features import encode_passages
from maskpolicy.tasks.files import gold_span_summary, report_splits
from maskpolicy.tasks.registry import get_task
from maskpolicy.tasks.tokenizer import tokenizer_for_task

from .config import PretrainConfig
from .models import is_preset, load_model_tokenizer, load_tokenizer


def load_task(config: PretrainConfig) -> Task:
    return get_task(config.task, data_dir=config.data_dir, **config.task_options)


def resolve_tokenizer(config: PretrainConfig, task: Task):
    if config.tokenizer:
        return load_tokenizer(config.tokenizer)
    if not is_preset(config.model):
        return load_model_tokenizer(config.model)
    return tokenizer_for_task(task, vocab_size=config.vocab_size)


def corpus_dataset(tokenizer, task: Task, max_length: int):
    """The intermediate corpus as a ``datasets.Dataset``: input_ids, word_ids, span_ids.

    Gold spans of both splits are kept: ``salient_span`` is the gold-span oracle; learned
    policies never see these columns during learning (meta/ builds its own)."""
    data = encode_passages(tokenizer, task.corpus, max_length=max_length, span_splits=("train", "eval"))
    return data.select_columns([c for c in ("input_ids", "word_ids", "span_ids") if c in data.column_names])


def learned_on(policy: MaskingPolicy) -> str | None:
    """The task a saved learned policy was learned (and its fill validated) on, if recorded."""
    learn_config = (getattr(policy, "metadata", None) or {}).get("learn_config") or {}
    return learn_config.get("task")


def same_task(a: str, b: str) -> bool:
    if a == b:
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.realpath(a) == os.path.realpath(b)


def apply_transfer_fill(config: PretrainConfig, policy: MaskingPolicy) -> str | None:
    """A learned policy's validated fill holds for the task it was validated on. Used on
    another task (transfer) with no fill named by the run, the budget is filled at random:
    the tokens the policy selects first, the rest as random masking takes them, so a policy
    that selects another task's answers never masks fewer tokens than ``random`` there.
    Returns the reason when it applies (recorded in results.json), else None."""
    source = learned_on(policy)
    if config.masking.fill is not None or getattr(policy, "fill", None) is None or source is None \
            or same_task(source, config.task):
        return None
    policy.fill = "random"
    return f"transfer: learned on {source}, run on {config.task}: fill random (its validated fill holds for {source})"


def build_policy(config: PretrainConfig, tokenizer, task: Task, dataset) -> MaskingPolicy:
    """The run's policy; ``pmi`` without a table gets one built from the task corpus, in
    memory (``save_built_pmi_table`` writes it once the output directory is taken); a
    learned policy run on another task than its own fills the budget at random unless the
    run names a fill (``apply_transfer_fill``)."""
    options = dict(config.policy_options)
    if config.policy == "pmi" and "table" not in options:
        from maskpolicy.policies.pmi_table import build_pmi_table

        vocab = get_policy("random", tokenizer).vocab
        options["table"] = build_pmi_table(list(dataset["input_ids"]), list(dataset["word_ids"]), vocab)
    policy = get_policy(config.policy, tokenizer, **options)
    check_gold_spans(task, policy, dataset)
    policy.transfer = apply_transfer_fill(config, policy)
    return policy


def save_built_pmi_table(policy: MaskingPolicy, out_dir: str) -> None:
    """A PMI table built for this run is saved as ``out_dir/pmi_table.json``, and the policy
    records that path (results.json names the table the run used)."""
    if getattr(policy, "table", None) == "<in-memory>":
        path = os.path.join(out_dir, "pmi_table.json")
        policy.pmi_table.save(path)
        policy.table = path


GOLD_SPAN_FALLBACK = "capitalised-word heuristic"
"""What ``salient_span`` masks in a row without gold span tokens (see its module)."""


def uses_gold_spans(policy: MaskingPolicy) -> bool:
    """Whether ``policy`` is the gold-span oracle: ``salient_span`` with ``use_gold_spans``."""
    return getattr(policy, "name", None) == "salient_span" and bool(getattr(policy, "use_gold_spans", False))


def rows_with_gold_spans(dataset) -> int:
    """How many rows of an encoded corpus have at least one ``span_ids`` entry >= 0 (what
    the oracle sees after tokenisation and truncation), counted in Arrow, not in Python."""
    column = dataset.with_format("arrow")["span_ids"].combine_chunks()
    inside = pc.greater_equal(pc.list_flatten(column), 0).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
    return int(np.unique(parents[inside]).size)


def check_gold_spans(task: Task, policy: MaskingPolicy, dataset) -> None:
    """The gold-span oracle on a cloze task whose corpus rows hold no gold span at all
    would silently be the heuristic: a ``DataError`` instead, before any training.
    Classification and corpus tasks have no answers to locate; ``salient_span`` is the
    heuristic there, as documented."""
    if task.kind != "cloze" or not uses_gold_spans(policy) or rows_with_gold_spans(dataset):
        return
    report = task.gold_span_report
    if report is not None:
        why = gold_span_summary(report)
    elif task.has_spans:
        why = "its gold spans lie beyond max_length in every passage"
    else:
        why = "the task provides no gold spans"
    raise DataError(f"task {task.name!r}: no corpus passage has a gold span, so the salient_span oracle "
                    f"(use_gold_spans=true) would only mask by its {GOLD_SPAN_FALLBACK}: {why}; fix the keys or "
                    "answers, or pass --policy-option use_gold_spans=false to use the heuristic on purpose")


def policy_run_info(policy: MaskingPolicy, task: Task, dataset) -> dict:
    """The run's policy as recorded in results.json and maskpolicy_run.json: its name and
    options; for the gold-span oracle also ``gold_spans``, what it actually used::

        {"rows": 120, "rows_with_gold": 90, "fallback_rows": 30,
         "fallback": "capitalised-word heuristic",
         "questions": {"train": 40, "eval": 10},                # tasks from files only
         "questions_without_span": {"train": 12, "eval": 0}}    # tasks from files only
    """
    info = {"name": policy.name, **policy.config()}
    if uses_gold_spans(policy):
        rows, with_gold = len(dataset), rows_with_gold_spans(dataset)
        gold = {"rows": rows, "rows_with_gold": with_gold, "fallback_rows": rows - with_gold,
                "fallback": GOLD_SPAN_FALLBACK}
        report = task.gold_span_report
        if report:
            splits = report_splits(report)
            gold["questions"] = {k: v["questions"] for k, v in splits.items()}
            gold["questions_without_span"] = {k: v["without_span"] for k, v in splits.items()}
        info["gold_spans"] = gold
    return info
