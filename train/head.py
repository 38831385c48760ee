"""The vocabulary projection at selected positions only.

The output embeddings (H x V per position; V = 8,000 here) are the largest matrix product of
a small BERT: for a 2 x 128 model about 70% of the forward FLOPs at every position, while an
MLM loss needs them at the ~15% labelled positions only. Inside ``projection_at(head,
selected)`` a forward pre-hook hands ``head`` hidden[selected] [n, H] instead of [B, T, H],
so the model's ``logits`` come out as [n, V]; the hook is removed on exit.
Used by pre-training (``masked_lm_loss`` below), the meta-steps (``meta.inner``) and
evaluation (``logits_at``: cloze and held-out masked-token accuracy).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def projection_at(head: torch.nn.Module, selected: torch.Tensor):
    """``selected``: [B, T] bool. Logits computed inside are [selected.sum(), V]."""
    hook = head.register_forward_pre_hook(lambda module, args: (args[0][selected],) + tuple(args[1:]))
    try:
        yield
    finally:
        hook.remove()


def logits_at(model, inputs: dict, selected: torch.Tensor, head: torch.nn.Module | None = None) -> torch.Tensor:
    """[selected.sum(), V] logits of a masked LM called on ``inputs`` (input_ids,
    attention_mask, ...) at the ``selected`` [B, T] positions. The projection runs there only
    when the model has a standard output-embedding module (``head``, default the model's;
    pass the inner module's when ``model`` is a DDP wrapper)."""
    if head is None and hasattr(model, "get_output_embeddings"):
        head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Module):
        return model(**inputs).logits[selected]
    with projection_at(head, selected):
        return model(**inputs).logits


def masked_lm_loss(model, batch: dict, head: torch.nn.Module | None = None) -> torch.Tensor:
    """Mean MLM cross-entropy over labelled positions, equal to ``model(**batch).loss``, with
    the vocabulary projection applied at the labelled positions only (``head.projection_at``).
    Models without a standard output-embedding module fall back to the model's own loss.
    ``head``: the output embeddings
    when ``model`` is wrapped (DDP): the hook goes on the inner module, the call through the
    wrapper so that gradients are still synchronised."""
    labels = batch["labels"]  # [B, T], -100 where not masked
    selected = labels != -100  # [B, T]
    logits = logits_at(model, {k: v for k, v in batch.items() if k != "labels"}, selected, head)  # [n, V]
    if not bool(selected.any()):  # a policy that may mask fewer (fill "none") masked nothing here:
        return logits.sum() * 0.0  # a zero loss with a graph (the mean over no token would be NaN)
    return torch.nn.functional.cross_entropy(logits, labels[selected])
