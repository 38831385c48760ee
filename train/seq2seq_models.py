"""Encoder-decoder models for seq2seq denoising: BART size presets built from a
configuration, or any seq2seq checkpoint (BART, T5, ...) through ``AutoModelForSeq2SeqLM``.

The presets mirror the BERT ones (``models.PRESETS``) layer for layer, encoder and
decoder each: ``tiny`` 2 x 128, ``mini`` 4 x 256. With a tokenizer built by maskpolicy
(BERT-style special tokens) the sequence is ``[CLS] ... [SEP]``: [CLS] serves as BOS,
[SEP] as EOS and, as in BART, EOS starts the decoder.
"""
from __future__ import annotations

import os

from transformers import AutoConfig, AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration
from transformers.utils import logging as hf_logging

from maskpolicy.policies.errors import ArtifactError, ConfigError

from .models import LoadReport, _looks_local, check_model_dir
from .sources import resolve_model

SEQ2SEQ_PRESETS: dict[str, dict] = {
    # name: layers (encoder and decoder each), hidden size, heads, feed-forward size
    "tiny": dict(encoder_layers=2, decoder_layers=2, d_model=128, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=512, decoder_ffn_dim=512),
    "mini": dict(encoder_layers=4, decoder_layers=4, d_model=256, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024),
}


def is_seq2seq_preset(name: str) -> bool:
    return name in SEQ2SEQ_PRESETS


def _special_ids(tokenizer) -> dict:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if tokenizer.pad_token_id is None or eos is None:
        raise ConfigError("a seq2seq model needs a tokenizer with a pad token and an end token (eos or [SEP])")
    return dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=bos, eos_token_id=eos,
                decoder_start_token_id=eos, forced_eos_token_id=eos)


def preset_seq2seq_model(name: str, tokenizer, max_length: int, **overrides) -> BartForConditionalGeneration:
    if name not in SEQ2SEQ_PRESETS:
        raise ConfigError(f"unknown seq2seq preset {name!r}; presets: {', '.join(SEQ2SEQ_PRESETS)} (or a checkpoint path)")
    unknown = sorted(k for k in overrides if not hasattr(BartConfig(), k))
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(unknown)} (BartConfig fields)")
    config = BartConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, max_length),
                        **_special_ids(tokenizer), **{**SEQ2SEQ_PRESETS[name], **overrides})
    return BartForConditionalGeneration(config)


def load_seq2seq_reporting(name_or_path: str) -> tuple[object, LoadReport]:
    """A seq2seq checkpoint (directory, offline source or hub name) and what was newly
    initialised; an encoder-only checkpoint is refused with a line that says so."""
    given = name_or_path
    name_or_path = resolve_model(name_or_path)
    if os.path.isdir(name_or_path):
        check_model_dir(name_or_path, tokenizer=False)
    elif _looks_local(name_or_path):
        raise ArtifactError(f"model directory not found: {name_or_path}")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot load model {given!r}: {str(err).splitlines()[0]}") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"model {given!r} is an encoder-only {config.model_type} model; --arch seq2seq needs an "
                          f"encoder-decoder checkpoint (BART, T5, ...); use --arch mlm for it")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, output_loading_info=True)
    except Exception as err:  # corrupt weights raise various errors deep inside
        raise ArtifactError(f"model {given!r} is corrupt or not a seq2seq model: {type(err).__name__}: "
                            f"{str(err).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, LoadReport(sorted(info.get("missing_keys") or ()), sorted(info.get("unexpected_keys") or ()))
