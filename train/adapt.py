"""The loop that adapts a task model with any method (``methods.py``), and its evaluation.

Classification: cross-entropy of the classifier; accuracy on the evaluation split.
Cloze: the MLM loss at the blank of each training question (the answer's tokens, as in
evaluation); closed-book exact match on the evaluation questions (``evaluate.cloze_metrics``).
Plain torch on the model's device, AdamW over the method's parameter groups, linear
warm-up (10%) and decay, as ``finetune.finetune_classifier``.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from maskpolicy.policies import MaskingCollator
from maskpolicy.policies.errors import DataError
from maskpolicy.tasks.base import Task
from maskpolicy.tasks.features import encode_cloze

from .evaluate import cloze_metrics
from .finetune import labelled_loader
from .head import masked_lm_loss
from .task_models import TaskModel

WARMUP_SHARE = 0.1


def _cloze_loader(tokenizer, questions, max_length: int, batch_size: int, seed: int) -> DataLoader:
    data = encode_cloze(tokenizer, questions, max_length=max_length).select_columns(["input_ids", "labels"])
    pad = MaskingCollator(tokenizer).pad  # pads labels with -100
    return DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=pad,
                      generator=torch.Generator().manual_seed(seed))


def train_loader(task_model: TaskModel, tokenizer, task: Task, *, max_length: int, batch_size: int,
                 max_train_examples: int | None, seed: int) -> DataLoader:
    train = task.train[:max_train_examples] if max_train_examples else task.train
    if not train or not task.eval:
        raise DataError(f"task {task.name} needs training and evaluation examples to be fine-tuned or masked")
    if task_model.kind == "classification":
        return labelled_loader(tokenizer, train, max_length, batch_size, True, seed)
    return _cloze_loader(tokenizer, train, max_length, batch_size, seed)


def step_loss(task_model: TaskModel, batch: dict) -> torch.Tensor:
    if task_model.kind == "classification":
        return task_model.model(**batch).loss
    return masked_lm_loss(task_model.model, batch)


def train_task_model(task_model: TaskModel, groups: list[dict], loader: DataLoader, *, epochs: int,
                     progress: bool = False, description: str = "fine-tune") -> list[float]:
    """Train in place; returns the loss of every step."""
    model = task_model.model
    device = next(model.parameters()).device
    steps = epochs * len(loader)
    optimizer = torch.optim.AdamW(groups)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP_SHARE * steps), steps)
    model.train()
    losses = []
    bar = tqdm(total=steps, desc=description, disable=not progress, leave=False)
    for _ in range(epochs):
        for batch in loader:
            loss = step_loss(task_model, {k: v.to(device) for k, v in batch.items()})
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def classification_accuracy(model, tokenizer, examples, *, max_length: int, batch_size: int = 256) -> float:
    loader = labelled_loader(tokenizer, examples, max_length, batch_size, False, 0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in loader:
        pred = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits.argmax(-1)
        correct += int((pred.cpu() == batch["labels"]).sum())
        total += len(pred)
    model.train(was_training)
    return correct / max(total, 1)


def evaluate_task_model(task_model: TaskModel, tokenizer, task: Task, *, max_length: int) -> dict:
    """``score`` = accuracy (classification) or cloze exact match."""
    if task_model.kind == "classification":
        accuracy = classification_accuracy(task_model.model, tokenizer, task.eval, max_length=max_length)
        return {"accuracy": accuracy, "score": accuracy, "num_eval": len(task.eval)}
    metrics = cloze_metrics(task_model.model, tokenizer, task.eval, max_length)
    return {**metrics, "score": metrics["cloze_em"], "num_eval": len(task.eval)}
