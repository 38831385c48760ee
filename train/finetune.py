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
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

from maskpolicy.policies import MaskingCollator
from maskpolicy.policies.errors import DataError
from maskpolicy.tasks.base import Task
from maskpolicy.tasks.features import encode_labeled

from .config import FinetuneConfig


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
    if not task.train or not task.eval:
        raise DataError(f"task {task.name} needs labelled train and eval examples for fine-tuning")
    set_seed(seed)
    num_labels = max(len(task.label_names), 1 + max(ex.label for ex in task.train + task.eval))
    device = next(lm.parameters()).device
    clf = classifier_from_lm(lm, num_labels).to(device)
    train = task.train[: config.max_train_examples] if config.max_train_examples else task.train
    train_loader = labelled_loader(tokenizer, train, max_length, config.batch_size, True, seed)
    eval_loader = labelled_loader(tokenizer, task.eval, max_length, 256, False, seed)
    steps = config.epochs * len(train_loader)
    optimizer = torch.optim.AdamW(clf.parameters(), lr=config.learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    clf.train()
    bar = tqdm(total=steps, desc="fine-tune", disable=not progress, leave=False)
    for _ in range(config.epochs):
        for batch in train_loader:
            loss = clf(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    clf.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in eval_loader:
            pred = clf(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits.argmax(-1)
            correct += int((pred.cpu() == batch["labels"]).sum())
            total += len(pred)
    return {"accuracy": correct / total, "num_eval": total, "finetune_steps": steps}
