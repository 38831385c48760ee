"""A linear probe of a masked LM's encoder: logistic regression on frozen sentence features.

The features are the encoder's last hidden states, mean-pooled over each sentence's tokens
(padding excluded), computed once in eval mode without gradients: [N, H]. They are
standardised with the training examples' mean and standard deviation, and a multinomial
logistic regression (weights [H, C], bias [C], L2 penalty ``L2_PENALTY``) is fitted to
convergence by L-BFGS from zero.

Why a probe of its own: a short fine-tuning from a pretrained start (the ``full`` method at
a few dozen steps) lands between 0.54 and 0.70 on MR for the same model, by seed alone, so
a curve of such probes shows the fine-tuning's noise rather than what pre-training changed.
This probe has no randomness (no dropout, no data order, a convex fit from zero): equal
models get equal accuracies, and its cost is one forward pass over the examples.
"""
from __future__ import annotations

import torch

from maskpolicy.policies.errors import DataError
from maskpolicy.tasks.base import Task

from .config import FinetuneConfig

L2_PENALTY = 1e-3  # times the squared weights, beside the mean cross-entropy
MAX_ITERATIONS = 500


@torch.no_grad()
def sentence_features(lm, tokenizer, examples, *, max_length: int, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled last hidden states [N, H] (float32, CPU) and labels [N] of ``examples``."""
    from .finetune import labelled_loader

    encoder = getattr(lm, lm.base_model_prefix)
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    features, labels = [], []
    try:
        for batch in labelled_loader(tokenizer, examples, max_length, batch_size, False, 0):
            mask = batch["attention_mask"].to(device)  # [B, T]
            hidden = encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state  # [B, T, H]
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            features.append(((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).float().cpu())  # [B, H]
            labels.append(batch["labels"])
    finally:
        lm.train(was_training)
    return torch.cat(features), torch.cat(labels)


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                            l2: float = L2_PENALTY, max_iterations: int = MAX_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [H, C] and bias [C] minimising mean cross-entropy + ``l2`` * |W|^2 over
    ``features`` [N, H] and ``labels`` [N] (a convex problem: the start does not matter)."""
    weight = torch.zeros(features.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    x, y = features.double(), labels.long()
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iterations, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return weight.detach(), bias.detach()


def linear_probe(lm, tokenizer, task: Task, config: FinetuneConfig, *, max_length: int = 128) -> dict:
    """Accuracy on ``task.eval`` of a logistic regression fitted on the encoder's features of
    ``task.train`` (the first ``config.max_train_examples``); ``epochs``, ``batch_size`` and
    ``learning_rate`` do not apply (the fit runs to convergence)."""
    if not task.train or not task.eval:
        raise DataError(f"task {task.name} needs labelled train and eval examples for a linear probe")
    train = task.train[: config.max_train_examples] if config.max_train_examples else task.train
    train_x, train_y = sentence_features(lm, tokenizer, train, max_length=max_length)
    eval_x, eval_y = sentence_features(lm, tokenizer, task.eval, max_length=max_length)
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)  # [H]
    num_classes = int(max(int(train_y.max()), int(eval_y.max()))) + 1
    weight, bias = fit_logistic_regression((train_x - mean) / std, train_y, num_classes)
    predictions = (((eval_x - mean) / std).double() @ weight + bias).argmax(-1)  # [N_eval]
    return {"accuracy": float((predictions == eval_y).double().mean()), "num_eval": len(task.eval),
            "finetune_steps": 0}
