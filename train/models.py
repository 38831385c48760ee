"""BERT-style masked LMs: size presets for training from scratch, or any HF checkpoint.

Presets build ``BertForMaskedLM`` from a ``BertConfig`` (random initialisation);
``--model PATH_OR_NAME`` loads any masked-LM or encoder checkpoint through
``AutoModelForMaskedLM``: a local directory, a known offline source (``sources.py``, e.g.
``minilm-l6``), or a hub name online. An encoder without an MLM head gets a new head, which
``head_warmup.py`` trains before the body moves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM
from transformers.utils import logging as hf_logging

from maskpolicy.policies.errors import ArtifactError, ConfigError

from .sources import resolve_model

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
    name_or_path = resolve_model(name_or_path)
    if os.path.isdir(name_or_path):
        check_model_dir(name_or_path)
    return load_tokenizer(name_or_path)


@dataclass
class LoadReport:
    """What ``from_pretrained`` did not find in the checkpoint (and so initialised anew), and
    what the checkpoint held that the masked LM has no place for (an encoder's pooler)."""

    new_parameters: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self, model) -> str:
        names = sorted({k.rsplit(".", 1)[0] for k in self.new_parameters})
        params = dict(model.named_parameters())
        count = sum(params[k].numel() for k in self.new_parameters if k in params)
        return f"{', '.join(names)} ({len(self.new_parameters)} tensors, {count:,} parameters)"


def load_masked_lm(name_or_path: str):
    """A masked LM from a local directory, a known offline source or a hub name, with clear errors."""
    return load_masked_lm_reporting(name_or_path)[0]


def _refuse_encoder_decoder(name_or_path: str, given: str) -> None:
    """``AutoModelForMaskedLM`` maps BART to its seq2seq class: say that it is one instead."""
    if not os.path.isfile(os.path.join(name_or_path, "config.json")):
        return  # a hub name: transformers decides (offline it fails with its own message)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except Exception:  # noqa: BLE001 - a broken config is reported by the load that follows
        return
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"model {given!r} is an encoder-decoder ({config.model_type}) model; masked-LM "
                          f"pre-training needs an encoder; use --arch seq2seq for it")


def load_masked_lm_reporting(name_or_path: str) -> tuple[object, LoadReport]:
    """``load_masked_lm`` and what was newly initialised. An encoder checkpoint without an MLM
    head (a sentence encoder, a classifier's body) loads with a new head; a checkpoint whose
    *encoder* weights are missing is not a masked LM or an encoder and is refused."""
    given = name_or_path
    name_or_path = resolve_model(name_or_path)
    if os.path.isdir(name_or_path):
        check_model_dir(name_or_path, tokenizer=False)  # the tokenizer may come from --tokenizer
    elif _looks_local(name_or_path):
        raise ArtifactError(f"model directory not found: {name_or_path}")
    _refuse_encoder_decoder(name_or_path, given)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' load report table: the run states it in one line instead
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True)
    except OSError as err:
        raise ArtifactError(f"cannot load model {given!r}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # corrupt weights / config raise various errors deep inside
        raise ArtifactError(f"model {given!r} is corrupt or not a masked LM or encoder: {type(err).__name__}: "
                            f"{str(err).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    report = LoadReport(sorted(info.get("missing_keys") or ()), sorted(info.get("unexpected_keys") or ()))
    body = [k for k in report.new_parameters if k.startswith(model.base_model_prefix + ".")]
    if body:
        total = sum(1 for k, _ in model.named_parameters() if k.startswith(model.base_model_prefix + "."))
        raise ArtifactError(f"model {given!r} is not a masked-LM or encoder checkpoint: {len(body)} of its {total} "
                            f"encoder tensors are missing (e.g. {body[0]})")
    return model, report


def load_tokenizer(name_or_path: str):
    name_or_path = resolve_model(name_or_path)
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


def check_model_tokenizer(model, tokenizer, max_length: int, model_name: str | None = None) -> None:
    """Refuse a tokenizer the model cannot read: more ids than embeddings, or (a checkpoint
    with a tokenizer of its own) another vocabulary, whose ids would index other words'
    embeddings and train nonsense without any error."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but the model's embeddings only {vocab}")
    directory = resolve_model(model_name) if model_name and not is_preset(model_name) else None
    if directory and os.path.isdir(directory) and any(os.path.isfile(os.path.join(directory, f)) for f in TOKENIZER_FILES):
        own, given = load_tokenizer(directory).get_vocab(), tokenizer.get_vocab()
        if own != given:
            moved = sum(1 for token, i in given.items() if own.get(token) != i)
            raise ConfigError(f"the tokenizer does not match model {model_name!r}: {moved} of its {len(given)} "
                              f"entries are missing from or have another id in the model's own vocabulary "
                              f"({len(own)} entries); leave out --tokenizer to use the model's")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ConfigError(f"max_length {max_length} exceeds the model's maximum length {limit}")
