"""BERT-style masked LMs: size presets for training from scratch, or any HF checkpoint.

No pre-trained weights are reachable offline, so presets build ``BertForMaskedLM`` from a
``BertConfig`` (random initialisation); ``--model PATH_OR_NAME`` loads any masked-LM
checkpoint through ``AutoModelForMaskedLM`` (a local directory here, a hub name online).
"""
from __future__ import annotations

import os

from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

from maskpolicy.policies.errors import ArtifactError, ConfigError

PRESETS: dict[str, dict] = {
    # name: layers, hidden size, heads, feed-forward size
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def preset_shape(name: str) -> str:
    """``"layers x hidden"`` of a size preset, for table headings ("2 x 128")."""
    size = PRESETS[name]
    return f"{size['num_hidden_layers']} x {size['hidden_size']}"


def preset_model(name: str, vocab_size: int, max_length: int, pad_token_id: int = 0, **overrides) -> BertForMaskedLM:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)} (or a checkpoint path)")
    options = {**PRESETS[name], **overrides}
    unknown = sorted(k for k in overrides if not hasattr(BertConfig(), k))
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(unknown)} (BertConfig fields)")
    config = BertConfig(vocab_size=vocab_size, max_position_embeddings=max(512, max_length),
                        pad_token_id=pad_token_id, **options)
    return BertForMaskedLM(config)


def _looks_local(name: str) -> bool:
    """A path rather than a hub name ("org/model" has exactly one slash and no dot prefix)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith("/")


# Any one of these is enough for AutoTokenizer (the fast tokenizer or the files it is built from).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def missing_model_files(directory: str, tokenizer: bool = True) -> list[str]:
    """What the model directory ``directory`` lacks: config.json, weights and (``tokenizer``)
    tokenizer files, in the words of the error message."""
    files = set(os.listdir(directory))
    missing = []
    if "config.json" not in files:
        missing.append("config.json")
    if not any(f.endswith(WEIGHT_SUFFIXES) for f in files):
        missing.append("weights (*.safetensors / *.bin)")
    if tokenizer and not files & set(TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json / vocab.txt)")
    return missing


def check_model_dir(directory: str, tokenizer: bool = True) -> None:
    """Refuse an incomplete model directory with one line naming everything it lacks, before
    transformers gets to fail on the first missing piece with a message of its own."""
    missing = missing_model_files(directory, tokenizer)
    if missing:
        raise ArtifactError(f"model directory {directory} is incomplete: no {', no '.join(missing)} "
                            "(pretrain writes a complete one to its --out/model)")


def load_model_tokenizer(name_or_path: str):
    """The tokenizer of the masked LM ``name_or_path`` (a directory is checked whole first:
    the tokenizer is loaded before the model, so it would otherwise report only itself)."""
    if os.path.isdir(name_or_path):
        check_model_dir(name_or_path)
    return load_tokenizer(name_or_path)


def load_masked_lm(name_or_path: str):
    """A masked LM from a local directory or a hub name, with clear errors."""
    if os.path.isdir(name_or_path):
        check_model_dir(name_or_path, tokenizer=False)  # the tokenizer may come from --tokenizer
    elif _looks_local(name_or_path):
        raise ArtifactError(f"model directory not found: {name_or_path}")
    try:
        return AutoModelForMaskedLM.from_pretrained(name_or_path)
    except OSError as err:
        raise ArtifactError(f"cannot load model {name_or_path!r}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # corrupt weights / config raise various errors deep inside
        raise ArtifactError(f"model {name_or_path!r} is corrupt or not a masked LM: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def load_tokenizer(name_or_path: str):
    if os.path.isfile(name_or_path):  # a WordPiece vocab file
        from maskpolicy.tasks.tokenizer import load_vocab_tokenizer

        return load_vocab_tokenizer(name_or_path)
    if os.path.isdir(name_or_path) and not any(os.path.isfile(os.path.join(name_or_path, f)) for f in TOKENIZER_FILES):
        raise ArtifactError(f"tokenizer directory {name_or_path} holds no tokenizer files ({' / '.join(TOKENIZER_FILES)}); "
                            "give a model or tokenizer directory written by pretrain, or a WordPiece vocab file")
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as err:
        raise ArtifactError(f"cannot load tokenizer {name_or_path!r}: {str(err).splitlines()[0]}") from None


def check_model_tokenizer(model, tokenizer, max_length: int) -> None:
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the model's embeddings only {vocab}")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ConfigError(f"max_length {max_length} exceeds the model's maximum length {limit}")
