"""The model a task is adapted with, built from a masked LM, and what its head is.

- classification: ``AutoModelForSequenceClassification`` from the LM's config with the LM's
  encoder weights (``finetune.classifier_from_lm``); head = every parameter the LM did not
  provide (pooler and classifier for BERT).
- cloze: a copy of the masked LM itself, answering through its MLM head; head = the MLM
  head's own parameters (transform and output bias; the decoder matrix is tied to the input
  embeddings, which belong to the body).

The *body* is everything else; ``base_fingerprint`` identifies it, so that an artifact
trained on one base (a mask, a head) refuses to load onto another.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from maskpolicy.policies.errors import ConfigError
from maskpolicy.tasks.base import Task

from .finetune import classifier_from_lm

ADAPTABLE_KINDS = ("classification", "cloze")


@dataclass
class TaskModel:
    model: nn.Module
    kind: str  # classification | cloze
    head: list[str]  # qualified names of the head's parameters
    base_fingerprint: str


def base_fingerprint(lm: nn.Module) -> str:
    """SHA-256 over the LM body's tensors (name, dtype, shape, bytes; names sorted): equal
    exactly when the body weights are bit-identical."""
    body = getattr(lm, lm.base_model_prefix, None)
    if body is None:
        raise ConfigError(f"{type(lm).__name__} has no base model ({lm.base_model_prefix!r}) to fingerprint")
    digest = hashlib.sha256()
    for name, tensor in sorted(body.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def num_labels_of(task: Task) -> int:
    return max(len(task.label_names), 1 + max(ex.label for ex in task.train + task.eval))


def build_task_model(lm: nn.Module, task: Task, *, num_labels: int | None = None, fingerprint: bool = True) -> TaskModel:
    """The model to adapt for ``task`` (the LM itself is not modified). ``fingerprint``:
    hash the body (needed for artifacts; a probe that stores nothing skips it)."""
    if task.kind not in ADAPTABLE_KINDS:
        raise ConfigError(f"task {task.name} is a {task.kind} task: fine-tuning and weight masking need a "
                          f"classification or cloze task (labelled examples or questions)")
    fingerprint = base_fingerprint(lm) if fingerprint else ""
    prefix = lm.base_model_prefix
    if task.kind == "classification":
        model = classifier_from_lm(lm, num_labels or num_labels_of(task))
        provided = {f"{prefix}.{name}" for name in getattr(lm, prefix).state_dict()}
        head = [name for name, _ in model.named_parameters() if name not in provided]
    else:
        model = copy.deepcopy(lm)
        head = [name for name, _ in model.named_parameters() if not name.startswith(prefix + ".")]
    if not head:
        raise ConfigError(f"{type(model).__name__} has no head parameters outside its body ({prefix}) to train")
    return TaskModel(model=model, kind=task.kind, head=head, base_fingerprint=fingerprint)
