"""The inner and outer problems of a meta-step when the language model is an encoder-decoder.

The policy weighs tokens of the *original* passage, ``w`` [B, T], as for a masked LM. With a
seq2seq model the candidates are not predicted in place: span corruption
(``policies.span_corruption``) turns each run of candidates into one marker in the encoder
input and the decoder reconstructs them, so the loss of candidate ``i`` sits at some target
position. ``seq2seq_inner_batch`` records where (``Seq2SeqMaskingCollator.corrupt_mask``), as ``target_source`` [B, L] (the original
position each target token reconstructs, -1 for markers, the end token and, with
``output="full"``, the copies of unmasked tokens), and the per-token loss is scattered back
to the original positions:

    l_i(phi) = CE of the target token that reconstructs candidate i     (i: [B, T] position)
    L_in(phi, w) = sum_i w_i l_i(phi) / N,  N = number of candidates

for both output formats. In ``"full"`` training the copies of unmasked tokens are also part
of the loss; their loss does not depend on which tokens are masked in this batch, so the
weighted inner loss leaves them out (weight 0), as it leaves out markers and the end token.

The outer loss is the mean CE of the answer tokens of closed-book questions, teacher-
forced, in one of two forms (``MetaConfig.outer``): ``cloze`` (default) reads the question
as denoising - its answer one masked span, reconstructed in the run's output format, the
form the inner step trains - and ``qa`` is question -> answer, the pairs
``train.generation_qa`` fine-tunes on.

Batches of both kinds go through ``inner.per_token_loss``, which dispatches here for
encoder-decoder models, so every hypergradient backend works unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.policies.seq2seq_collator import Seq2SeqMaskingCollator

IGNORE_INDEX = -100
SEQ2SEQ_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")


def is_encoder_decoder(lm) -> bool:
    config = getattr(lm, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


def seq2seq_inner_batch(collator: Seq2SeqMaskingCollator, original_ids: torch.Tensor, attention_mask: torch.Tensor,
                        candidates: torch.Tensor) -> dict:
    """The inner batch for a seq2seq model from padded passages.

    ``original_ids``, ``attention_mask``, ``candidates`` (bool): [B, T]; ``collator`` built
    with the model (``meta_collator``). Returns its corruption of exactly the candidates
    (``Seq2SeqMaskingCollator.corrupt_mask``: each run one marker, sentinels when the
    tokenizer has them, else its mask token): ``input_ids`` / ``attention_mask`` [B, S],
    ``labels`` and ``decoder_input_ids`` [B, L], ``target_source`` [B, L]; and
    ``weight_positions`` [B, T] (the candidates: where ``w`` counts).
    """
    candidates = candidates.bool() & attention_mask.bool()
    batch = collator.corrupt_mask(original_ids, attention_mask, candidates, sources=True)
    batch["weight_positions"] = candidates
    return batch


def meta_collator(tokenizer, output: str, lm) -> Seq2SeqMaskingCollator:
    """The corruption of the inner and outer batches (given masks; the policy is not asked)."""
    if lm is None or not hasattr(lm, "prepare_decoder_input_ids_from_labels"):
        raise ConfigError("a seq2seq meta batch needs the model, to make decoder_input_ids from labels")
    return Seq2SeqMaskingCollator(tokenizer, "random", output=output, model=lm)


def seq2seq_outer_batch(collator: Seq2SeqMaskingCollator, questions: list, max_length: int, *,
                        form: str = "cloze") -> dict:
    """The outer batch: ``input_ids`` / ``attention_mask`` [B, S], ``labels`` and
    ``decoder_input_ids`` [B, L], labelled at the answer tokens only.

    ``form="cloze"``: the question read as the denoising the inner step trains
    (``train.seq2seq_evaluate.cloze_as_denoising``: its answer one masked span,
    reconstructed in the collator's output format); ``form="qa"``: question -> answer pairs
    (``train.generation_qa``'s fine-tuning encoding).
    """
    tokenizer, lm = collator.tokenizer, collator.model
    if form == "qa":
        from maskpolicy.train.generation_qa import encode_qa, pad_rows

        rows = encode_qa(tokenizer, questions, max_length)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = pad_rows([r["input_ids"] for r in rows], pad)  # [B, S]
        labels = pad_rows([r["labels"] for r in rows], IGNORE_INDEX)  # [B, L]
        return {"input_ids": input_ids, "attention_mask": pad_rows([[1] * len(r["input_ids"]) for r in rows], 0),
                "labels": labels, "decoder_input_ids": lm.prepare_decoder_input_ids_from_labels(labels=labels)}
    if form != "cloze":
        raise ConfigError(f"unknown outer form {form!r}; choose 'cloze' or 'qa'")
    from maskpolicy.policies import MaskingCollator
    from maskpolicy.tasks.features import encode_cloze
    from maskpolicy.train.seq2seq_evaluate import cloze_as_denoising

    encoded = encode_cloze(tokenizer, questions, max_length=max_length)
    batch = MaskingCollator(tokenizer).pad([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in encoded])
    return cloze_as_denoising(collator, batch)


def seq2seq_per_token_loss(lm, params: dict | None, batch: dict) -> torch.Tensor:
    """Decoder cross-entropy per token: [B, L] over the target, 0 where ``labels == -100``;
    with ``target_source`` scattered back to the original positions: [B, T] (the shape of
    ``weight_positions``), 0 where no target token reconstructs the position."""
    if "labels" not in batch or "decoder_input_ids" not in batch:
        raise DataError("a seq2seq meta batch needs 'labels' and 'decoder_input_ids'")
    labels = batch["labels"]  # [B, L]
    kwargs = {k: batch[k] for k in SEQ2SEQ_INPUTS if k in batch}
    out = lm(**kwargs) if params is None else functional_call(lm, params, args=(), kwargs=kwargs)
    logits = out.logits  # [B, L, V]
    if logits.shape[:2] != labels.shape:
        raise DataError(f"decoder logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    real = labels != IGNORE_INDEX
    loss = F.cross_entropy(logits.flatten(0, 1), labels.clamp_min(0).flatten(), reduction="none").view(labels.shape)
    loss = torch.where(real, loss, torch.zeros_like(loss))  # [B, L]
    source = batch.get("target_source")
    if source is None:
        return loss
    positions = batch["weight_positions"]  # [B, T]
    reconstructs = (source >= 0) & real  # [B, L]
    scattered = loss.new_zeros(positions.shape)
    return scattered.scatter_add(1, source.clamp_min(0), torch.where(reconstructs, loss, torch.zeros_like(loss)))
