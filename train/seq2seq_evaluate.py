"""Held-out denoising metrics of a seq2seq model: the quick evaluation along a seq2seq
pre-training run (what ``evaluate.masked_token_accuracy`` is for the MLM loop).

Held-out passages are corrupted once with random 15% token masking (fixed seed, the same
spans for every model and policy) in the run's output format; the model is scored with
teacher forcing on the target: mean cross-entropy per target token and the share of
target tokens predicted exactly (``denoise_accuracy``; for ``spans`` targets these are the
markers and the masked tokens, for ``full`` every token of the sentence).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from maskpolicy.policies import MaskingCollator
from maskpolicy.policies.seq2seq_collator import Seq2SeqMaskingCollator
from maskpolicy.tasks.features import encode_passages

HELD_OUT = 256  # passages


@torch.no_grad()
def denoising_metrics(model, tokenizer, passages, *, output: str, max_length: int = 64, batch_size: int = 64,
                      seed: int = 1234) -> dict:
    if not passages:
        return {"denoise_accuracy": float("nan"), "denoise_loss": float("nan"), "target_tokens": 0}
    data = encode_passages(tokenizer, passages[:HELD_OUT], max_length=max_length, span_splits=()).select_columns(["input_ids"])
    pad = MaskingCollator(tokenizer).pad
    corrupt = Seq2SeqMaskingCollator(tokenizer, "random", output=output, model=model)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    hits = total = 0
    loss_sum = 0.0
    for batch in DataLoader(data, batch_size=batch_size, collate_fn=pad):
        inputs = {k: v.to(device) for k, v in corrupt.corrupt(batch, generator).items()}
        logits = model(**inputs).logits  # [B, L, V]
        labels = inputs["labels"]
        selected = labels != -100
        hits += int((logits.argmax(-1)[selected] == labels[selected]).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(logits[selected], labels[selected], reduction="sum"))
        total += int(selected.sum())
    model.train(was_training)
    return {"denoise_accuracy": hits / max(total, 1), "denoise_loss": loss_sum / max(total, 1), "target_tokens": total}


def cloze_as_denoising(collator: Seq2SeqMaskingCollator, batch: dict) -> dict:
    """Padded cloze rows (``encode_cloze``: ``input_ids`` with the blank as mask tokens,
    ``labels`` the answer ids there, ``attention_mask``; [B, T]) read as denoising: the
    question with its answer in place, the answer corrupted as one span by ``collator``
    (one marker) and reconstructed in its output format. ``labels`` [B, L] keep only the
    answer's tokens (-100 elsewhere: markers, end token, copies), ``decoder_input_ids`` the
    whole target. Used for scoring (below) and as the seq2seq meta-step's outer loss."""
    answer = batch["labels"] != -100  # [B, T]
    original = torch.where(answer, batch["labels"], batch["input_ids"])  # the answer in place
    out = collator.corrupt_mask(original, batch["attention_mask"], answer, sources=True)
    source = out.pop("target_source")  # [B, L]
    out["labels"] = torch.where(source >= 0, out["labels"], torch.full_like(out["labels"], -100))
    return out


@torch.no_grad()
def seq2seq_cloze_metrics(model, tokenizer, questions, *, output: str, max_length: int = 64,
                          batch_size: int = 64) -> dict:
    """Cloze read as denoising (``cloze_as_denoising``), without fine-tuning, teacher-forced:
    ``answer_nll``: mean CE of the answer tokens; ``cloze_em``: every answer token predicted
    exactly. What ``evaluate.cloze_metrics`` is for a masked LM (the selection score of
    ``meta.validate``)."""
    if not questions:
        return {"cloze_em": float("nan"), "answer_nll": float("nan")}
    from maskpolicy.tasks.features import encode_cloze

    data = encode_cloze(tokenizer, questions, max_length=max_length)
    pad = MaskingCollator(tokenizer).pad
    corrupt = Seq2SeqMaskingCollator(tokenizer, "random", output=output, model=model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, nll, tokens = 0, 0.0, 0
    for batch in DataLoader(data.select_columns(["input_ids", "labels"]), batch_size=batch_size, collate_fn=pad):
        inputs = {k: v.to(device) for k, v in cloze_as_denoising(corrupt, batch).items()}
        target = inputs["labels"]  # [B, L], the answer tokens only
        logits = model(**inputs).logits.float()  # [B, L, V]
        scored = target != -100
        nll += float(torch.nn.functional.cross_entropy(logits[scored], target[scored], reduction="sum"))
        tokens += int(scored.sum())
        wrong = (logits.argmax(-1) != target) & scored
        correct += int((~wrong.any(dim=1)).sum())
    model.train(was_training)
    return {"cloze_em": correct / len(questions), "answer_nll": nll / max(tokens, 1)}
