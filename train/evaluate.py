"""Downstream evaluation of a masked LM on a task.

- ``cloze`` tasks: closed-book cloze exact match. The question's blank is shown as as many
  [MASK] tokens as the answer has; the answer counts only if every token is right.
- ``classification`` tasks: fine-tune a classifier from the LM, report accuracy.
- ``corpus`` tasks: masked-token accuracy and MLM loss on held-out passages under a fixed
  random 15% mask (same positions for every model, so numbers are comparable).

Every metric dict has a ``score`` entry: the task's main number, higher is better.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from maskpolicy.policies import Masker, MaskingCollator, MaskingConfig, get_policy
from maskpolicy.tasks.base import Task
from maskpolicy.tasks.features import cloze_exact_match, encode_cloze, encode_passages

from .config import FinetuneConfig
from .head import logits_at


QUICK_HELD_OUT = 256  # passages for periodic (quick) masked-token evaluation
MAX_HELD_OUT = 2048  # passages for the final one


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def cloze_accuracy(model, tokenizer, questions, max_length: int = 64, batch_size: int = 128) -> float:
    """Fraction of questions whose answer tokens are all predicted exactly."""
    return cloze_metrics(model, tokenizer, questions, max_length, batch_size)["cloze_em"]


@torch.no_grad()
def cloze_metrics(model, tokenizer, questions, max_length: int = 64, batch_size: int = 128) -> dict:
    """``cloze_em`` (every answer token exact) and ``answer_nll`` (mean cross-entropy of the
    answer tokens: smooth where exact match is still 0 for every model)."""
    if not questions:
        return {"cloze_em": float("nan"), "answer_nll": float("nan")}
    data = encode_cloze(tokenizer, questions, max_length=max_length)
    # Shortest first: batches of similar lengths carry little padding (the score is a count).
    lengths = [len(ids) for ids in data["input_ids"]]
    data = data.select(sorted(range(len(data)), key=lengths.__getitem__))
    pad = MaskingCollator(tokenizer).pad
    loader = DataLoader(data.remove_columns([c for c in data.column_names if c not in ("input_ids", "labels")]),
                        batch_size=batch_size, collate_fn=pad)
    was_training = model.training
    model.eval()
    device, correct, nll, tokens = _device_of(model), 0, 0.0, 0
    for batch in loader:
        labels = batch.pop("labels").to(device)  # [B, T], -100 outside the blank
        selected = labels != -100
        predicted = labels.clone()  # positions outside the blank stay -100: they do not count
        logits = logits_at(model, {k: v.to(device) for k, v in batch.items()}, selected)  # [n, V]
        predicted[selected] = logits.argmax(-1)
        correct += int(cloze_exact_match(predicted, labels).sum())
        nll += float(torch.nn.functional.cross_entropy(logits.float(), labels[selected], reduction="sum"))
        tokens += int(selected.sum())
    model.train(was_training)
    return {"cloze_em": correct / len(questions), "answer_nll": nll / max(tokens, 1)}


@torch.no_grad()
def masked_token_accuracy(model, tokenizer, passages, max_length: int = 64, batch_size: int = 64, seed: int = 1234) -> dict:
    """MLM accuracy/loss on ``passages`` under a fixed random mask (all [MASK], no 80/10/10)."""
    data = encode_passages(tokenizer, passages, max_length=max_length, span_splits=())
    data = data.select_columns(["input_ids"])
    masker = Masker(get_policy("random", tokenizer), MaskingConfig(mask_replace_prob=1.0, random_replace_prob=0.0))
    pad = MaskingCollator(tokenizer).pad
    loader = DataLoader(data, batch_size=batch_size, collate_fn=pad)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    hits = total = 0
    loss_sum = 0.0
    for batch in loader:
        masked = masker(batch, generator=generator)
        masked = {k: v.to(device) for k, v in masked.items()}
        sel = masked["labels"] != -100  # [B, T]
        n = int(sel.sum())
        if n == 0:
            continue
        logits = logits_at(model, {k: v for k, v in masked.items() if k != "labels"}, sel)  # [n, V]
        targets = masked["labels"][sel]
        hits += int((logits.argmax(-1) == targets).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        total += n
    model.train(was_training)
    return {"mlm_accuracy": hits / max(total, 1), "mlm_loss": loss_sum / max(total, 1), "masked_tokens": total}


def evaluate_task(
    model,
    tokenizer,
    task: Task,
    *,
    max_length: int = 64,
    finetune: FinetuneConfig | None = None,
    seed: int = 0,
    quick: bool = False,
    progress: bool = False,
) -> dict:
    """Metrics of ``model`` on ``task`` (see module doc). ``quick`` skips fine-tuning
    (periodic evaluation during pre-training uses masked-token accuracy instead)."""
    if task.kind == "cloze":
        em = cloze_accuracy(model, tokenizer, task.eval, max_length)
        out = {"cloze_em": em, "score": em, "num_eval": len(task.eval)}
        if not quick:
            out["cloze_em_train"] = cloze_accuracy(model, tokenizer, task.train, max_length)
        return out
    held_out = task.eval_corpus or task.corpus[: max(1, min(512, len(task.corpus) // 10))]
    # The first passages only (the same ones for every model): the periodic evaluations of a
    # run would otherwise cost more than its training steps on a large held-out corpus.
    held_out = held_out[: QUICK_HELD_OUT if quick else MAX_HELD_OUT]
    mlm = masked_token_accuracy(model, tokenizer, held_out, max_length)
    if task.kind == "corpus" or quick:
        return {**mlm, "score": mlm["mlm_accuracy"]}
    from .finetune import finetune_classifier

    cls = finetune_classifier(model, tokenizer, task, finetune or FinetuneConfig(), max_length=max_length, seed=seed, progress=progress)
    return {**mlm, **cls, "score": cls["accuracy"]}
