"""Interchangeable ways to adapt a pretrained model to a task, by name (``--method``).

- ``full``: fine-tune every weight (the usual baseline);
- ``head``: freeze the body, train the head only (a linear probe; for cloze tasks the MLM
  head's transform and bias);
- ``mask``: freeze every weight, learn a binary mask over the matching linear layers'
  weights (``weightmask``; Zhao et al. 2020), and train the head unless told not to.

A method decides what trains and with which optimizer groups (``prepare``), and what is
stored per task (``save``): a whole model for ``full``; an adapter (head, packed mask) for
the others, a few megabytes on top of the shared base.
"""
from __future__ import annotations

import os

from maskpolicy.policies.atomic import save_directory_atomic
from maskpolicy.policies.errors import ConfigError

from .task_models import TaskModel
from .weightmask import WeightMaskConfig, attach_score_masks, masked_share, save_adapter

FULL_WEIGHT_DECAY = 0.01  # as fine-tuning elsewhere in the project (finetune.py)


def head_group(task_model: TaskModel, learning_rate: float) -> dict:
    """Make the head's parameters trainable; their optimizer group."""
    params = dict(task_model.model.named_parameters())
    head = [params[name] for name in task_model.head]
    for p in head:
        p.requires_grad_(True)
    return {"params": head, "lr": learning_rate, "weight_decay": FULL_WEIGHT_DECAY}


class FullFinetuning:
    name = "full"

    def prepare(self, task_model: TaskModel, *, learning_rate: float, head_learning_rate: float,
                mask: WeightMaskConfig, seed: int) -> list[dict]:
        params = [p for p in task_model.model.parameters()]
        for p in params:
            p.requires_grad_(True)
        return [{"params": params, "lr": learning_rate, "weight_decay": FULL_WEIGHT_DECAY}]

    def save(self, task_model: TaskModel, directory: str, *, tokenizer, base_model: str, task: dict,
             mask: WeightMaskConfig) -> dict:
        def write(tmp: str) -> None:
            task_model.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

        save_directory_atomic(directory, write)
        return {name: os.path.getsize(os.path.join(directory, name)) for name in sorted(os.listdir(directory))
                if name.endswith(".safetensors")}

    def describe(self, task_model: TaskModel) -> dict:
        return {}


class HeadOnly:
    name = "head"

    def prepare(self, task_model: TaskModel, *, learning_rate: float, head_learning_rate: float,
                mask: WeightMaskConfig, seed: int) -> list[dict]:
        for p in task_model.model.parameters():
            p.requires_grad_(False)
        return [head_group(task_model, head_learning_rate)]

    def save(self, task_model: TaskModel, directory: str, *, tokenizer, base_model: str, task: dict,
             mask: WeightMaskConfig) -> dict:
        return save_adapter(directory, method=self.name, task_model=task_model, base_model=base_model, task=task)

    def describe(self, task_model: TaskModel) -> dict:
        return {}


class WeightMasking:
    name = "mask"

    def prepare(self, task_model: TaskModel, *, learning_rate: float, head_learning_rate: float,
                mask: WeightMaskConfig, seed: int) -> list[dict]:
        model = task_model.model
        for p in model.parameters():
            p.requires_grad_(False)
        masks = attach_score_masks(model, mask, seed=seed)
        for name in task_model.head:
            if any(name.startswith(layer + ".") for layer in masks):
                raise ConfigError(f"the weight-mask pattern matches the head layer of {name}; "
                                  f"narrow the pattern to the body")
        # No weight decay on the scores: it would push them under tau.
        groups = [{"params": [m.scores for m in masks.values()], "lr": mask.score_learning_rate, "weight_decay": 0.0}]
        if mask.train_head:
            groups.append(head_group(task_model, head_learning_rate))
        return groups

    def save(self, task_model: TaskModel, directory: str, *, tokenizer, base_model: str, task: dict,
             mask: WeightMaskConfig) -> dict:
        return save_adapter(directory, method=self.name, task_model=task_model, base_model=base_model, task=task,
                            tau=mask.tau, pattern=mask.pattern)

    def describe(self, task_model: TaskModel) -> dict:
        return {"masked_share": masked_share(task_model.model)}


METHODS = {method.name: method for method in (FullFinetuning, HeadOnly, WeightMasking)}


def get_method(name: str):
    if name not in METHODS:
        raise ConfigError(f"unknown fine-tuning method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]()


def trainable_parameters(groups: list[dict]) -> int:
    return sum(p.numel() for group in groups for p in group["params"])
