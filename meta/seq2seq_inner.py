"""The inner and outer problems of a meta-step when the language model is an encoder-decoder.

The policy weighs tokens of the *original* passage, ``w`` [B, T], as for a masked LM. With a
seq2seq model the candidates are not predicted in place: span corruption
(``policies.span_corruption``) turns each run of candidates into one marker in the encoder
input and the decoder reconstructs them, so the loss of candidate ``i`` sits at some target
position. ``seq2seq_inner_batch`` records where, as ``target_source`` [B, L] (the original
position each target token reconstructs, -1 for markers, the end token and, with
``output="full"``, the copies of unmasked tokens), and the per-token loss is scattered back
to the original positions:

    l_i(phi) = CE of the target token that reconstructs candidate i     (i: [B, T] position)
    L_in(phi, w) = sum_i w_i l_i(phi) / N,  N = number of candidates

for both output formats. In ``"full"`` training the copies of unmasked tokens are also part
of the loss; their loss does not depend on which tokens are masked in this batch, so the
weighted inner loss leaves them out (weight 0), as it leaves out markers and the end token.

The outer loss is closed-book QA by generation, teacher-forced: the question (its blank
shown as the marker) in the encoder, the answer in the decoder, mean CE over answer tokens;
the same pairs ``train.generation_qa`` fine-tunes on.

Batches of both kinds go through ``inner.per_token_loss``, which dispatches here for
encoder-decoder models, so every hypergradient backend works unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.policies.seq2seq_collator import sentinel_ids
from maskpolicy.policies.span_corruption import OUTPUTS, corrupt_spans, spans_of

IGNORE_INDEX = -100
SEQ2SEQ_INPUTS = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")


def is_encoder_decoder(lm) -> bool:
    config = getattr(lm, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


def target_sources(mask: list[bool], output: str, end: bool) -> list[int]:
    """The original position each target token of ``corrupt_spans`` reconstructs, -1 where it
    reconstructs none (markers, the end token, copies of unmasked tokens in ``full``)."""
    if output == "full":
        return [i if masked else -1 for i, masked in enumerate(mask)]
    out = []
    for start, stop in spans_of(mask):
        out.append(-1)  # the span's marker
        out.extend(range(start, stop))
    return out + ([-1] if end else [])


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def seq2seq_inner_batch(original_ids: torch.Tensor, attention_mask: torch.Tensor, candidates: torch.Tensor,
                        tokenizer, output: str, lm=None) -> dict:
    """The inner batch for a seq2seq model from right-padded passages.

    ``original_ids``, ``attention_mask``, ``candidates`` (bool): [B, T]. Returns
    ``input_ids`` / ``attention_mask`` [B, S] (each run of candidates one marker: sentinels
    when the tokenizer has them, else its mask token, as the collator does), ``labels`` and
    ``decoder_input_ids`` [B, L], ``target_source`` [B, L] and ``weight_positions`` [B, T]
    (the candidates: where ``w`` counts).
    """
    if output not in OUTPUTS:
        raise ConfigError(f"unknown output format {output!r}; choose 'spans' or 'full'")
    sentinels = sentinel_ids(tokenizer)
    end_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if not sentinels and tokenizer.mask_token_id is None:
        raise ConfigError("the tokenizer has neither sentinel tokens nor a mask token to mark masked spans")
    candidates = candidates & attention_mask.bool()
    encoders, targets, sources = [], [], []
    for ids, keep, chosen in zip(original_ids.tolist(), attention_mask.tolist(), candidates.tolist()):
        length = sum(keep)  # right padding: the real tokens come first
        seq, mask = ids[:length], chosen[:length]
        n_spans = len(spans_of(mask))
        markers = sentinels if sentinels else [tokenizer.mask_token_id] * n_spans
        encoder, target = corrupt_spans(seq, mask, markers, output=output, end_id=end_id)
        encoders.append(encoder)
        targets.append(target)
        sources.append(target_sources(mask, output, end=output == "spans" and end_id is not None))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = _pad(encoders, pad)
    labels = _pad(targets, IGNORE_INDEX)
    batch = {"input_ids": input_ids, "attention_mask": _pad([[1] * len(e) for e in encoders], 0), "labels": labels,
             "target_source": _pad(sources, -1), "weight_positions": candidates.clone()}
    batch["decoder_input_ids"] = decoder_inputs(lm, labels)
    return batch


def decoder_inputs(lm, labels: torch.Tensor) -> torch.Tensor:
    """``labels`` shifted right behind the decoder start token (what the model does itself)."""
    if lm is not None and hasattr(lm, "prepare_decoder_input_ids_from_labels"):
        return lm.prepare_decoder_input_ids_from_labels(labels=labels)
    raise ConfigError("a seq2seq meta batch needs the model to make decoder_input_ids from labels")


def seq2seq_outer_batch(tokenizer, questions: list, max_length: int, lm) -> dict:
    """Question -> answer pairs (``train.generation_qa``'s encoding), padded: ``input_ids`` /
    ``attention_mask`` [B, S], ``labels`` and ``decoder_input_ids`` [B, L]."""
    from maskpolicy.train.generation_qa import encode_qa

    rows = encode_qa(tokenizer, questions, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = _pad([r["input_ids"] for r in rows], pad)
    labels = _pad([r["labels"] for r in rows], IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": _pad([[1] * len(r["input_ids"]) for r in rows], 0),
            "labels": labels, "decoder_input_ids": decoder_inputs(lm, labels)}


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
