"""Everything a pre-training run needs before the loop: task, tokenizer, dataset, policy.

Tokenizer choice, in order: ``--tokenizer`` (a directory, hub name or WordPiece vocab
file); the tokenizer saved with ``--model`` when it is a checkpoint; else a WordPiece
tokenizer trained on the task's texts (deterministic, saved with the model).
"""
from __future__ import annotations

import os

from policies import MaskingPolicy, get_policy
from tasks.base import Task
from tasks.features import encode_passages
from tasks.registry import get_task
from tasks.tokenizer import tokenizer_for_task

from .config import PretrainConfig
from .models import is_preset, load_tokenizer


def load_task(config: PretrainConfig) -> Task:
    return get_task(config.task, data_dir=config.data_dir, **config.task_options)


def resolve_tokenizer(config: PretrainConfig, task: Task):
    if config.tokenizer:
        return load_tokenizer(config.tokenizer)
    if not is_preset(config.model):
        return load_tokenizer(config.model)
    return tokenizer_for_task(task, vocab_size=config.vocab_size)


def corpus_dataset(tokenizer, task: Task, max_length: int):
    """The intermediate corpus as a ``datasets.Dataset``: input_ids, word_ids, span_ids.

    Gold spans of both splits are kept: ``salient_span`` is the gold-span oracle; learned
    policies never see these columns during learning (meta/ builds its own)."""
    data = encode_passages(tokenizer, task.corpus, max_length=max_length, span_splits=("train", "eval"))
    return data.select_columns([c for c in ("input_ids", "word_ids", "span_ids") if c in data.column_names])


def build_policy(config: PretrainConfig, tokenizer, task: Task, dataset, out_dir: str | None) -> MaskingPolicy:
    """The run's policy; ``pmi`` without a table gets one built from the task corpus."""
    options = dict(config.policy_options)
    if config.policy == "pmi" and "table" not in options:
        from policies.pmi_table import build_pmi_table

        table = build_pmi_table(list(dataset["input_ids"]), list(dataset["word_ids"]), get_policy("random", tokenizer).vocab)
        if out_dir:
            path = os.path.join(out_dir, "pmi_table.json")
            table.save(path)
            options["table"] = path
        else:
            options["table"] = table
    return get_policy(config.policy, tokenizer, **options)
