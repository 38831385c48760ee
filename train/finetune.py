"""Fine-tune a sequence classifier from a masked LM and report accuracy.

The classifier is ``AutoModelForSequenceClassification`` built from the LM's config; the
encoder weights are copied from the LM (the pooler and head start fresh), so any masked-LM
checkpoint works, not only BERT.

The loop is plain torch on the LM's device, not an ``Accelerator``: it also runs *inside*
pre-training (the downstream probes of ``PretrainConfig.probe_every``), where a second
``Accelerator`` would overwrite the shared gradient-accumulation state of the first.
"""
from __future__ import annotations

import copy

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification

from maskpolicy.policies import MaskingCollator
from maskpolicy.policies.errors import DataError
from maskpolicy.tasks.base import Task
from maskpolicy.tasks.features import encode_labeled

from .config import FinetuneConfig
from .linear_probe import linear_probe


def classifier_from_lm(lm, num_labels: int):
    config = copy.deepcopy(lm.config)
    config.num_labels = num_labels
    clf = AutoModelForSequenceClassification.from_config(config)
    prefix = lm.base_model_prefix
    encoder = getattr(lm, prefix)
    getattr(clf, prefix).load_state_dict(encoder.state_dict(), strict=False)  # pooler stays fresh
    return clf


def labelled_loader(tokenizer, examples, max_length, batch_size, shuffle, seed):
    data = encode_labeled(tokenizer, examples, max_length=max_length).select_columns(["input_ids", "labels"])
    pad = MaskingCollator(tokenizer).pad

    def collate(rows):
        batch = pad([{"input_ids": r["input_ids"]} for r in rows])
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        return batch

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=gen)


def finetune_classifier(lm, tokenizer, task: Task, config: FinetuneConfig, *, max_length: int = 128,
                        seed: int = 0, progress: bool = False) -> dict:
    """Full fine-tuning of a classifier from ``lm`` (the ``full`` method of ``methods.py``
    through the loop of ``adapt.py``), then accuracy on the evaluation split; with
    ``config.method == "linear"`` a linear probe of the frozen encoder instead."""
    from .adapt import classification_accuracy, train_task_model  # adapt builds on this module
    from .methods import FullFinetuning
    from .task_models import build_task_model

    if config.method == "linear":
        return linear_probe(lm, tokenizer, task, config, max_length=max_length)
    if not task.train or not task.eval:
        raise DataError(f"task {task.name} needs labelled train and eval examples for fine-tuning")
    set_seed(seed)
    task_model = build_task_model(lm, task, fingerprint=False)  # stores nothing: no fingerprint
    task_model.model.to(next(lm.parameters()).device)
    train = task.train[: config.max_train_examples] if config.max_train_examples else task.train
    loader = labelled_loader(tokenizer, train, max_length, config.batch_size, True, seed)
    groups = FullFinetuning().prepare(task_model, learning_rate=config.learning_rate, head_learning_rate=0.0,
                                      mask=None, seed=seed)
    steps = len(train_task_model(task_model, groups, loader, epochs=config.epochs, progress=progress))
    accuracy = classification_accuracy(task_model.model, tokenizer, task.eval, max_length=max_length)
    return {"accuracy": accuracy, "num_eval": len(task.eval), "finetune_steps": steps}
