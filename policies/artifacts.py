"""Saved learned policies: one directory with config, weights and (usually) the tokenizer.

    <dir>/policy_config.json   format tag, policy name, options, vocabulary fingerprint, metadata
    <dir>/model.safetensors    the state dict (non-persistent buffers are rebuilt from the tokenizer)
    <dir>/tokenizer*.json ...  tokenizer.save_pretrained output, when a tokenizer is known

A policy only makes sense with the vocabulary it was trained on, so loading compares
vocabulary fingerprints and refuses another tokenizer. Saving builds the directory next to
the target and swaps it in with ``os.replace``, so a crash never leaves a half-written policy.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file, save_file

from .atomic import honour_umask_tree, replace_directory
from .errors import ArtifactError, ConfigError
from .paths import read_text
from .vocab import VocabInfo

FORMAT = "maskpolicy-learned-policy/1"
CONFIG_NAME = "policy_config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def save_policy(policy, directory: str, tokenizer=None, metadata: dict | None = None) -> str:
    """Write ``policy`` (a LearnedPolicy) to ``directory`` atomically; returns the absolute path."""
    if metadata is not None and not isinstance(metadata, dict):
        raise ConfigError(f"policy metadata must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(metadata or {})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"policy metadata must be JSON-serialisable: {e}") from None
    tokenizer = tokenizer if tokenizer is not None else getattr(policy, "tokenizer", None)
    if tokenizer is not None and VocabInfo.from_tokenizer(tokenizer).fingerprint != policy.vocab.fingerprint:
        raise ConfigError("the tokenizer given to save_pretrained has another vocabulary than the policy's")

    target = os.path.abspath(os.fspath(directory))
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise ArtifactError(f"cannot save a policy to {target!r}: it exists and is not a directory")
        if os.listdir(target) and not os.path.isfile(os.path.join(target, CONFIG_NAME)):
            # Never replace a directory that is not a saved policy (it may hold anything).
            raise ArtifactError(f"refusing to replace {target!r}: it is not empty and holds no saved policy")
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)

    config = {
        "format": FORMAT,
        "policy": policy.name,
        "options": policy.config(),
        "vocab_fingerprint": policy.vocab.fingerprint,
        "vocab_size": policy.vocab.vocab_size,
        "tokenizer_name_or_path": policy.vocab.name_or_path,
        "has_tokenizer": tokenizer is not None,
        "metadata": metadata or {},
    }
    # Weights go to CPU, contiguous: what safetensors requires, and device-independent.
    state = {k: v.detach().to("cpu").contiguous() for k, v in policy.state_dict().items()}

    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        with open(os.path.join(tmp, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        save_file(state, os.path.join(tmp, WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        honour_umask_tree(tmp)  # mkdtemp makes it 0700, safetensors its files 0600: ordinary output
        replace_directory(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, ArtifactError):
            raise ArtifactError(f"could not save the policy to {target!r}: {e}") from e
        raise
    return target


def read_config(directory: str) -> dict:
    """The validated ``policy_config.json`` of a saved policy directory."""
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(path):
        raise ArtifactError(f"{directory!r} is not a saved policy: {CONFIG_NAME} is missing")
    text = read_text(path, fix="save the policy again", error=ArtifactError)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path!r} is corrupt (not readable JSON): {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ArtifactError(f"{path!r} has format {found!r}; expected {FORMAT!r}")
    if not isinstance(config.get("options"), dict) or not isinstance(config.get("vocab_fingerprint"), str):
        raise ArtifactError(f"{path!r} is incomplete: it needs 'options' (a dict) and 'vocab_fingerprint'")
    return config


def _load_tokenizer(directory: str):
    if not any(os.path.isfile(os.path.join(directory, f)) for f in TOKENIZER_FILES):
        raise ArtifactError(
            f"{directory!r} holds no tokenizer; pass the tokenizer this policy was trained with"
        )
    from transformers import AutoTokenizer  # deferred: only needed when loading one from disk

    try:
        return AutoTokenizer.from_pretrained(directory)
    except Exception as e:  # transformers raises many kinds (OSError, ValueError, ...)
        raise ArtifactError(f"could not load the tokenizer saved in {directory!r}: {e}") from e


def _read_weights(directory: str, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    path = os.path.join(directory, WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise ArtifactError(f"{directory!r} is incomplete: {WEIGHTS_NAME} is missing")
    try:
        state = load_file(path, device="cpu")
    except Exception as e:  # SafetensorError, or OSError for unreadable files
        raise ArtifactError(f"{path!r} is corrupt: {e}") from None
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ArtifactError(
            f"{path!r} does not match the policy config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, want in expected.items():
        if tuple(state[key].shape) != tuple(want.shape):
            raise ArtifactError(
                f"{path!r}: weight {key!r} has shape {tuple(state[key].shape)}, the config implies {tuple(want.shape)}"
            )
    return state


def load_policy(cls, directory: str, tokenizer=None, map_location="cpu"):
    """Rebuild a saved policy of class ``cls`` (LearnedPolicy); returned in eval mode."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ArtifactError(f"no saved policy at {directory!r} (not a directory)")
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"map_location must be a device such as 'cpu' or 'cuda:0', got {map_location!r}") from e
    config = read_config(directory)
    if config.get("policy") != cls.name:
        raise ArtifactError(f"{directory!r} holds a {config.get('policy')!r} policy, not {cls.name!r}")
    if tokenizer is None:
        tokenizer = _load_tokenizer(directory)
    vocab = VocabInfo.from_tokenizer(tokenizer)
    if vocab.fingerprint != config["vocab_fingerprint"]:
        saved = config.get("tokenizer_name_or_path") or "an unnamed tokenizer"
        given = vocab.name_or_path or "an unnamed tokenizer"
        raise ArtifactError(
            f"the policy in {directory!r} was trained with another tokenizer ({saved!r}, "
            f"{config.get('vocab_size')} tokens, fingerprint {config['vocab_fingerprint']}) than the one given "
            f"({given!r}, {vocab.vocab_size} tokens, fingerprint {vocab.fingerprint}); pass the tokenizer it was "
            "trained with, or none to use the one saved with it"
        )
    try:
        policy = cls(tokenizer, vocab=vocab, **config["options"])
    except (ConfigError, TypeError) as e:
        raise ArtifactError(f"{os.path.join(directory, CONFIG_NAME)!r} has invalid options: {e}") from None
    state = _read_weights(directory, policy.state_dict())
    policy.load_state_dict(state)
    policy.metadata = config.get("metadata") or {}  # how it was learned (learn's config and report)
    return policy.to(device).eval()
