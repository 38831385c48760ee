"""``Seq2SeqMaskingCollator``: any masking policy drives span corruption for encoder-decoder
models (BART text infilling, T5 span corruption), with the decoder target as the masked
spans or the full sentence.

    collator = Seq2SeqMaskingCollator(tokenizer, "salient_span", output="spans")
    batch = collator([tokenizer(text) for text in texts])
    # input_ids / attention_mask: the corrupted encoder input, each span one marker
    # labels: the target (-100 at padding); decoder_input_ids when ``model`` is given

Masks come from the policy through the same exact-budget sampler as the MLM collator
(``Masker.select``; whole words and spans kept whole where the policy says so), then
``span_corruption`` turns each run of masked tokens into one marker. The conventions are
those of ``transformers.DataCollatorForSeq2Seq``: labels padded with
``label_pad_token_id`` (-100) on the tokenizer's padding side, ``pad_to_multiple_of``
applied to inputs and labels, ``decoder_input_ids`` from
``model.prepare_decoder_input_ids_from_labels`` when a model is given (BART and T5 also
make them from ``labels`` themselves), per-example keys passed through. Usable with
``Seq2SeqTrainer`` and any ``DataLoader``.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from .base import MaskingPolicy
from .collate_io import Padding, WorkerGenerators, check_format, collate, stack_examples
from .errors import ConfigError
from .masker import Masker, MaskingConfig
from .registry import get_policy
from .span_corruption import CORRUPTIONS, OUTPUTS, corrupt_spans, spans_of, target_sources

SENTINEL = re.compile(r"^<extra_id_(\d+)>$")


def sentinel_ids(tokenizer) -> list[int]:
    """The tokenizer's sentinel ids ``<extra_id_0>``, ``<extra_id_1>``, ... in order (T5's
    names; tokenizers built by maskpolicy for seq2seq carry them too)."""
    found = sorted((int(m.group(1)), i) for token, i in tokenizer.get_vocab().items() if (m := SENTINEL.match(token)))
    return [i for _, i in found]


class Seq2SeqMaskingCollator:
    def __init__(self, tokenizer, policy: str | MaskingPolicy = "random", *, output: str = "spans",
                 corruption: str | None = None, mlm_probability: float = 0.15, deterministic: bool = False,
                 fill: str | None = None, seed: int | None = None, model=None, label_pad_token_id: int = -100,
                 pad_to_multiple_of: int | None = None, return_tensors: str = "pt",
                 policy_options: dict | None = None) -> None:
        """``output``: "spans" | "full"; ``corruption``: "mask" (one mask token per span) |
        "sentinel" (span k -> sentinel k); default: sentinels when the tokenizer has them,
        else its mask token."""
        if output not in OUTPUTS:
            raise ConfigError(f"unknown output format {output!r}; choose 'spans' (the masked spans) or 'full' "
                              f"(the whole sentence)")
        if tokenizer is None:
            raise ConfigError("Seq2SeqMaskingCollator needs a tokenizer")
        sentinels = sentinel_ids(tokenizer)
        corruption = corruption or ("sentinel" if sentinels else "mask")
        if corruption not in CORRUPTIONS:
            raise ConfigError(f"unknown corruption {corruption!r}; choose 'mask' or 'sentinel'")
        if corruption == "sentinel" and not sentinels:
            raise ConfigError("corruption='sentinel' needs sentinel tokens (<extra_id_0>, ...), which this tokenizer "
                              "lacks; add them (tokenizer.add_special_tokens) or use corruption='mask'")
        if corruption == "mask" and tokenizer.mask_token_id is None:
            raise ConfigError("the tokenizer has neither sentinel tokens nor a mask token to mark masked spans; "
                              "add one (tokenizer.add_special_tokens) and resize the model's embeddings")
        self.end_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if output == "spans" and self.end_id is None:
            raise ConfigError("output='spans' ends each target with the end token, but the tokenizer has no eos or "
                              "sep token")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ConfigError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
        self.tokenizer, self.output, self.corruption = tokenizer, output, corruption
        self.markers = sentinels if corruption == "sentinel" else None
        self.model, self.label_pad_token_id = model, label_pad_token_id
        self.pad_to_multiple_of, self.seed = pad_to_multiple_of, seed
        self.return_tensors = check_format(return_tensors)
        self.policy = get_policy(policy, tokenizer, **(policy_options or {}))
        # Only the selection of the masker is used: spans become markers, no 80/10/10.
        self.masker = Masker(self.policy, MaskingConfig(rate=mlm_probability, mask_replace_prob=1.0,
                                                        random_replace_prob=0.0, deterministic=deterministic,
                                                        fill=fill), allow_empty_rows=True)
        self._generators = WorkerGenerators(seed)

    @property
    def generator(self) -> torch.Generator | None:
        """Seeded generator; each DataLoader worker gets its own stream (seed + worker id + 1)."""
        return self._generators.current()

    @property
    def padding(self) -> Padding:
        tok = self.tokenizer
        return Padding(pad_id=tok.pad_token_id, left=getattr(tok, "padding_side", "right") == "left",
                       multiple=self.pad_to_multiple_of)

    def markers_for(self, n_spans: int) -> list[int]:
        return self.markers if self.markers is not None else [self.tokenizer.mask_token_id] * n_spans

    def __call__(self, features: Sequence, return_tensors: str | None = None) -> dict:
        fmt = check_format(return_tensors or self.return_tensors)
        batch = collate(features, self.padding, skip=("labels", "decoder_input_ids"))
        out = self.corrupt(batch.tokens, self.generator)
        for key, values in batch.examples.items():
            out[key] = stack_examples(key, values, fmt)
        if fmt == "np":
            out = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
            out.update({k: np.asarray(v) for k, v in batch.texts.items()})
        return out

    def corrupt(self, tokens: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict:
        """A padded batch (``input_ids``, ``attention_mask`` [B, T] and policy extras, on any
        device) -> encoder ``input_ids`` / ``attention_mask``, ``labels`` (and
        ``decoder_input_ids`` with a model), on the same device. The training loop calls
        this on the device; ``__call__`` on examples."""
        ids, attention = tokens["input_ids"], tokens["attention_mask"]  # [B, T]
        extras = {k: v for k, v in tokens.items() if k not in ("input_ids", "attention_mask", "token_type_ids")}
        if ids.shape[1]:
            mask, _ = self.masker.select(ids, attention, generator, **extras)  # [B, T] bool
        else:
            mask = torch.zeros_like(ids, dtype=torch.bool)
        return self.corrupt_mask(ids, attention, mask)

    def corrupt_mask(self, ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor, *,
                     sources: bool = False) -> dict:
        """``corrupt`` for a given mask ([B, T] bool; the policy is not asked). With
        ``sources`` also ``target_source`` [B, L]: the position in ``ids`` that each target
        token reconstructs, -1 for markers, the end token, copies of unmasked tokens
        (``full``) and padding (what a per-token loss on the masked tokens needs)."""
        encoder_rows, target_rows, source_rows = [], [], []
        for row_ids, row_mask, row_attention in zip(ids.tolist(), mask.tolist(), attention.tolist()):
            kept = [i for i, a in enumerate(row_attention) if a]  # the real tokens, whatever the padding side
            seq, seq_mask = [row_ids[i] for i in kept], [bool(row_mask[i]) for i in kept]
            markers = self.markers_for(len(spans_of(seq_mask)))
            encoder, target = corrupt_spans(seq, seq_mask, markers, output=self.output, end_id=self.end_id)
            encoder_rows.append(encoder)
            target_rows.append(target)
            if sources:
                source_rows.append([-1 if j < 0 else kept[j] for j in
                                    target_sources(seq_mask, self.output, end=self.end_id is not None)])
        out = {"input_ids": self._pad(encoder_rows, self.tokenizer.pad_token_id or 0),
               "attention_mask": self._pad([[1] * len(r) for r in encoder_rows], 0),
               "labels": self._pad(target_rows, self.label_pad_token_id)}
        if sources:
            out["target_source"] = self._pad(source_rows, -1)
        if self.model is not None and hasattr(self.model, "prepare_decoder_input_ids_from_labels"):
            out["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=out["labels"])
        return {k: v.to(ids.device) for k, v in out.items()}

    def _pad(self, rows: list[list[int]], value: int) -> torch.Tensor:
        """[B, L] on the tokenizer's padding side, L a multiple of ``pad_to_multiple_of``."""
        length = max((len(r) for r in rows), default=0)
        if self.pad_to_multiple_of and length % self.pad_to_multiple_of:
            length += self.pad_to_multiple_of - length % self.pad_to_multiple_of
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out = torch.full((len(rows), length), value, dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                if left:
                    out[i, length - len(row):] = torch.tensor(row)
                else:
                    out[i, : len(row)] = torch.tensor(row)
        return out

    def __repr__(self) -> str:
        return (f"Seq2SeqMaskingCollator(policy={self.policy!r}, output={self.output!r}, "
                f"corruption={self.corruption!r}, rate={self.masker.config.rate})")
