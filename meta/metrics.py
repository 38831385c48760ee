"""How well a policy's masks hit the labelled tokens (answer spans, important words).

``token_prf`` scores the policy's ranking under a budget (what the ``ranking`` fill draws): the
exact-budget deterministic top-k of ``Masker(policy, MaskingConfig(rate, deterministic=True, fill="ranking"))``
(``k = round(rate * maskable)`` per sequence, whole units kept whole when the policy has
units). Precision/recall/F1 of that mask against the positive labels are the headline
numbers (``recall_at_budget`` = ``recall``); ``threshold_*`` score ``p >= 0.5`` instead, which
says how calibrated the probabilities are; ``random_recall`` is what random masking with the
same budget recalls in expectation (``sum_rows k/n * positives / sum positives``), the bar
any useful policy must clear.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from maskpolicy.policies import Masker, MaskingConfig, MaskingPolicy, mask_budget
from maskpolicy.policies.errors import ConfigError
from maskpolicy.tasks.base import Task

from .labels import answer_span_labels, batch_slice, padded_labels


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def _prf(tp: float, chosen: float, positives: float) -> tuple[float, float, float]:
    p, r = _ratio(tp, chosen), _ratio(tp, positives)
    return p, r, _f1(p, r)


@torch.no_grad()
def token_prf_padded(policy: MaskingPolicy, tensors: dict[str, torch.Tensor], rate: float = 0.15,
                     batch_size: int = 64) -> dict:
    """``token_prf`` on tensors from ``labels.padded_labels`` (lets callers pad once)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    masker = Masker(policy, MaskingConfig(rate=rate, deterministic=True, fill="ranking"))
    device = policy.special_ids.device
    was_training = policy.training
    policy.eval()  # no dropout: the budgeted choice must be reproducible
    tp = chosen = tp_thr = chosen_thr = positives = expected_random = reachable = 0.0
    try:
        N = tensors["input_ids"].shape[0]
        for start in range(0, N, batch_size):
            b = batch_slice(tensors, torch.arange(start, min(start + batch_size, N)), device)
            labels = b["token_labels"]  # [b, t]: 1 positive, 0 / KEEP negative, -100 ignored
            labelled = labels >= 0
            pos = labels == 1
            mask, probs = masker.select(b["input_ids"], b["attention_mask"], word_ids=b["word_ids"])  # [b, t] x2
            mask = mask & labelled
            tp += float((mask & pos).sum())
            chosen += float(mask.sum())
            above = (probs >= 0.5) & labelled
            tp_thr += float((above & pos).sum())
            chosen_thr += float(above.sum())
            positives += float(pos.sum())
            # Random masking picks k of the n maskable tokens uniformly: each is hit with k/n.
            maskable = policy.maskable(b["input_ids"], b["attention_mask"])  # [b, t]
            k = mask_budget(maskable, rate).double()  # [b]
            n = maskable.sum(1).clamp(min=1).double()  # [b]
            expected_random += float(((k / n) * (pos & maskable).sum(1).double()).sum())
            # The best any policy can do: a sequence with more answer tokens than its budget
            # (multi-token answers in short sentences) cannot have all of them masked.
            reachable += float(torch.minimum(k, (pos & maskable).sum(1).double()).sum())
    finally:
        policy.train(was_training)
    p, r, f = _prf(tp, chosen, positives)
    tp_, tr_, tf_ = _prf(tp_thr, chosen_thr, positives)
    return {
        "precision": p, "recall": r, "f1": f, "recall_at_budget": r,
        "threshold_precision": tp_, "threshold_recall": tr_, "threshold_f1": tf_,
        "random_recall": _ratio(expected_random, positives),
        "recall_ceiling": _ratio(reachable, positives), "recall_of_ceiling": _ratio(tp, reachable),
        "positives": int(positives), "masked": int(chosen), "sequences": int(tensors["input_ids"].shape[0]),
    }


def token_prf(policy: MaskingPolicy, dataset, rate: float = 0.15, batch_size: int = 64) -> dict:
    """Precision/recall/F1 of the policy's budgeted mask against ``dataset``'s token labels
    (a Dataset with ``input_ids``, ``word_ids``, ``token_labels``; see ``labels.py``).

    Keys: precision, recall, f1, recall_at_budget, threshold_precision/recall/f1 (p >= 0.5),
    random_recall, recall_ceiling (the recall of a perfect policy under the same budget: below 1
    when answers have more tokens than a sequence's budget), recall_of_ceiling = recall /
    recall_ceiling (floats); positives, masked, sequences (counts). Ratios with a zero
    denominator are 0.0.
    """
    return token_prf_padded(policy, padded_labels(dataset, policy.vocab.pad_id), rate, batch_size)


# Progress bars call answer_recall every few steps on the same task: the encoded, padded
# held-out set is cached. Entries keep the task and tokenizer alive, so their ids cannot be
# reused by other objects while cached (an identity check guards the lookup anyway).
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 4


def _held_out_tensors(task: Task, tokenizer, split: str, max_length: int, pad_id: int) -> dict:
    key = (id(task), id(tokenizer), split, max_length, pad_id, len(task.corpus))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is task and hit[1] is tokenizer:
        _CACHE.move_to_end(key)
        return hit[2]
    tensors = padded_labels(answer_span_labels(task, tokenizer, max_length=max_length, split=split), pad_id)
    _CACHE[key] = (task, tokenizer, tensors)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return tensors


def answer_recall(policy: MaskingPolicy, tokenizer, task: Task, split: str = "eval", rate: float = 0.15,
                  max_length: int = 64) -> float:
    """Share of the ``split`` answer-span tokens that the policy's budgeted mask hits."""
    tensors = _held_out_tensors(task, tokenizer, split, max_length, policy.vocab.pad_id)
    return token_prf_padded(policy, tensors, rate=rate, batch_size=256)["recall"]
