"""Direct supervision: fit a policy network to token labels with weighted BCE.

    policy = LearnedPolicy(tokenizer)
    report = train_supervised(policy, train_labels, SupervisedConfig(), eval_data=held_out)
    policy, report = learn_supervised(task, tokenizer, {}, SupervisedConfig())   # labels built from the task

Labels come from ``labels.py``: answer spans for cloze tasks (training entities only; the
evaluation entities' passages are the held-out set), selective-masking importance for
classification tasks (``selective.py``). Positives are rare (about one token in eight for
the synthetic tasks), so the positive class is up-weighted: by default by the data's
negative/positive ratio (capped at 20); Train No Evil used a fixed 3.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from maskpolicy.policies import LearnedPolicy
from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.policies.sampler import check_rate
from maskpolicy.tasks.base import LabeledText, Task

from .labels import KEEP, answer_span_labels, batch_slice, check_label_dataset, padded_labels
from .metrics import token_prf_padded
from .selective import ClassifierConfig, SelectiveConfig, fit_classifier, importance_labels

MAX_POS_WEIGHT = 20.0  # cap of the automatic weight: a few positives must not swamp the loss


@dataclass
class SupervisedConfig:
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 3e-3
    pos_weight: float | None = None  # None = negatives/positives of the training labels, capped at 20
    weight_decay: float = 0.0
    seed: int = 0
    max_length: int = 64
    rate: float = 0.15  # budget of the reported (budgeted) precision/recall
    targets: str = "three_way"  # cloze tasks: "three_way" = answers 1, the passage's key (subject) 0,
    #   other tokens ``rate`` (a flat tail below the answers, the subject at the bottom); "two_way" =
    #   answers 1, everything else 0 (the tail is whatever the network generalises: on the dense
    #   world, the subject's name)
    selective: SelectiveConfig = field(default_factory=SelectiveConfig)  # classification tasks
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # classification tasks

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"supervised: {name} must be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"supervised: seed must be an int, got {self.seed!r}")
        if not _number(self.learning_rate) or self.learning_rate <= 0:
            raise ConfigError(f"supervised: learning_rate must be > 0, got {self.learning_rate!r}")
        if self.pos_weight is not None and (not _number(self.pos_weight) or self.pos_weight <= 0):
            raise ConfigError(f"supervised: pos_weight must be > 0 or None, got {self.pos_weight!r}")
        if not _number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"supervised: weight_decay must be >= 0, got {self.weight_decay!r}")
        self.rate = check_rate(self.rate)
        if self.targets not in ("two_way", "three_way"):
            raise ConfigError(f"supervised: targets must be two_way or three_way, got {self.targets!r}")
        # Nested options arrive as dicts from YAML / the CLI.
        for name, cls in (("selective", SelectiveConfig), ("classifier", ClassifierConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                try:
                    setattr(self, name, cls(**value))
                except TypeError as err:
                    raise ConfigError(f"supervised: bad {name} options: {err}") from None
            elif not isinstance(value, cls):
                raise ConfigError(f"supervised: {name} must be a dict or {cls.__name__}, got {type(value).__name__}")


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def train_supervised(policy: LearnedPolicy, train_data, config: SupervisedConfig | None = None,
                     eval_data=None, progress: bool = True) -> dict:
    """Fit ``policy`` to ``train_data``'s token labels (weighted BCE with logits, Adam).

    Deterministic for ``config.seed`` (shuffling and dropout are seeded; the policy's own
    initialisation is the caller's). Returns ``history`` (per epoch: mean loss, and the
    budgeted recall on ``eval_data`` when given), ``pos_weight``, ``train`` and ``held_out``
    (``token_prf`` dicts at ``config.rate``), ``train_seconds``. ``train_data`` / ``eval_data``:
    label datasets (``input_ids``, ``word_ids``, ``token_labels``). The policy is left in eval mode.
    """
    config = config or SupervisedConfig()
    if not isinstance(policy, LearnedPolicy):
        raise ConfigError(f"supervised training needs a LearnedPolicy, got {type(policy).__name__}")
    check_label_dataset(train_data, "training labels")
    pad_id = policy.vocab.pad_id
    train = padded_labels(train_data, pad_id)  # [N, T] each
    held = padded_labels(eval_data, pad_id) if eval_data is not None else None
    labels = train["token_labels"]
    n_pos, n_neg = int((labels == 1).sum()), int(((labels == 0) | (labels == KEEP)).sum())
    if n_pos == 0:
        raise DataError("the training labels hold no positive token: nothing to learn")
    pos_weight = float(config.pos_weight) if config.pos_weight is not None else \
        min(max(n_neg, 1) / n_pos, MAX_POS_WEIGHT)
    device = policy.special_ids.device
    weight = torch.tensor(pos_weight, device=device)
    torch.manual_seed(config.seed)  # dropout inside the policy
    order_gen = torch.Generator().manual_seed(config.seed)  # shuffling, independent of the global stream
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc="supervised", disable=not progress)
    for epoch in bar:
        policy.train()
        total, count = 0.0, 0
        for index in torch.randperm(labels.shape[0], generator=order_gen).split(config.batch_size):
            b = batch_slice(train, index, device)
            logits = policy.logits(b["input_ids"], b["attention_mask"])  # [b, t]
            labels_b = b["token_labels"]  # [b, t]: 1 / 0 / KEEP, -100 ignored
            use = labels_b >= 0
            if not use.any():
                continue
            positive = labels_b == 1
            target = positive.float()
            if config.targets == "three_way":  # other tokens at the budget share, KEEP at 0
                target = torch.where(labels_b == 0, torch.full_like(target, config.rate), target)
            # Up-weight the positives only (a pos_weight would also scale the soft targets' positive part).
            token_weight = torch.where(positive, weight, torch.ones_like(target))
            loss = F.binary_cross_entropy_with_logits(logits[use], target[use], weight=token_weight[use])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * int(use.sum())
            count += int(use.sum())
        row = {"epoch": epoch, "loss": round(total / max(count, 1), 5)}
        if held is not None:
            row["recall"] = round(token_prf_padded(policy, held, config.rate, batch_size=256)["recall"], 5)
        history.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "epoch"})
    bar.close()
    policy.eval()
    report = {"history": history, "pos_weight": round(pos_weight, 4),
              "train_seconds": round(time.perf_counter() - started, 2),
              "train": token_prf_padded(policy, train, config.rate, batch_size=256)}
    if held is not None:
        report["held_out"] = token_prf_padded(policy, held, config.rate, batch_size=256)
    return report


def task_labels(task: Task, tokenizer, config: SupervisedConfig, progress: bool = False, classifier=None):
    """(train labels, held-out labels or None, info dict) for ``task``.

    Cloze tasks with gold spans: answer spans (train split / eval split). Classification
    tasks: importance labels of ``task.train`` / ``task.eval`` by ``classifier`` (fine-tuned
    here on ``task.train`` when None). Anything else: ``DataError`` (no supervision signal).
    """
    if task.kind == "classification":
        if not task.train or not all(isinstance(ex, LabeledText) for ex in task.train):
            raise DataError(f"task {task.name} has no labelled training examples for --method supervised "
                            "(selective masking needs them): no supervision signal")
        info = {"labels": "selective_importance"}
        if classifier is None:
            num_labels = max(len(task.label_names), 1 + max(ex.label for ex in task.train + task.eval))
            classifier = fit_classifier(tokenizer, task.train, num_labels, config.classifier,
                                        max_length=config.max_length, progress=progress)
        train = importance_labels(classifier, tokenizer, task.train, config.selective, config.max_length)
        scanned = min(len(task.train), config.selective.max_examples or len(task.train))
        # Only correctly classified examples are kept: their share is the classifier's accuracy.
        info.update(kept_train_examples=len(train), classifier_train_accuracy=round(len(train) / scanned, 4))
        held = None
        if task.eval:
            try:
                held = importance_labels(classifier, tokenizer, task.eval, config.selective, config.max_length)
                info["kept_eval_examples"] = len(held)
            except DataError:
                held = None  # the classifier got no eval example right: report training metrics only
        if not any(1 in row for row in train["token_labels"]):
            raise DataError(f"task {task.name}: selective masking found no important word (delta="
                            f"{config.selective.delta}); no supervision signal")
        return train, held, info
    # Cloze (and anything else) must have gold answer spans of the train split.
    train = answer_span_labels(task, tokenizer, max_length=config.max_length, split="train",
                               mark_keys=config.targets == "three_way")
    held = None
    if any(s.split == "eval" for p in task.corpus for s in p.spans):
        held = answer_span_labels(task, tokenizer, max_length=config.max_length, split="eval")
    return train, held, {"labels": "answer_spans"}


def learn_supervised(task: Task, tokenizer, policy_options: dict | None = None,
                     config: SupervisedConfig | None = None, progress: bool = True,
                     classifier=None) -> tuple[LearnedPolicy, dict]:
    """A fresh ``LearnedPolicy(tokenizer, **policy_options)`` trained on ``task``'s labels.

    The report holds ``train_supervised``'s keys plus how the labels were made, the number
    of training / held-out sequences and the training labels' positive share; ``held_out``
    is the precision/recall/F1 on the evaluation split (eval entities, or ``task.eval``).
    """
    config = config or SupervisedConfig()
    if task.kind != "cloze" and config.targets != "two_way":  # importance labels have no subject to keep visible
        config = replace(config, targets="two_way")
    train, held, info = task_labels(task, tokenizer, config, progress=progress, classifier=classifier)
    torch.manual_seed(config.seed)  # the policy's initial weights
    policy = LearnedPolicy(tokenizer, **(policy_options or {}))
    report = train_supervised(policy, train, config, eval_data=held, progress=progress)
    labels = [int(x == 1) for row in train["token_labels"] for x in row if x >= 0]
    report.update(info)
    report.update({"num_train_sequences": len(train), "num_eval_sequences": len(held) if held is not None else 0,
                   "positive_fraction": round(sum(labels) / max(len(labels), 1), 4),
                   "config": _plain(asdict(config))})
    return policy, report


def _plain(value):
    """frozensets (stop words) are not JSON: sorted lists instead."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value
