"""Task adapters on disk: a packed binary mask (``method: mask``) and/or a trained head.

A directory holds
- ``adapter_config.json``: format, method, task kind and labels, the base model (as given:
  a directory, an offline source or a hub name) and the fingerprint of its body, the masked
  layers with their shapes, tau, and the head's tensors with their shapes;
- ``mask.safetensors``: one uint8 tensor of packed bits per masked layer (1 bit per weight,
  1 = kept; ``packing.py``), absent for a head-only adapter;
- ``head.safetensors``: the head's tensors (classifier and pooler, or the MLM head).

``load_adapter`` rebuilds the task model on a base: it refuses a base whose body
fingerprint differs (a mask is only valid on the exact weights it was trained on), and any
missing, corrupt or mismatched file, with one line naming it.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from maskpolicy.policies.atomic import save_directory_atomic
from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.policies.paths import read_text

from maskpolicy.tasks.base import Task

from ..models import load_masked_lm_reporting, load_tokenizer
from ..task_models import build_task_model
from .layers import attach_fixed_masks, current_masks
from .packing import pack_bits, unpack_bits

FORMAT = "maskpolicy-adapter/1"
CONFIG_NAME = "adapter_config.json"
MASK_NAME = "mask.safetensors"
HEAD_NAME = "head.safetensors"


def head_state(model: torch.nn.Module, head: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: params[name].detach().cpu().contiguous().clone() for name in head}


def save_adapter(directory: str, *, method: str, task_model, base_model: str, task: dict,
                 tau: float | None = None, pattern: str | None = None) -> dict:
    """Write ``task_model``'s adapter atomically; returns the bytes of each file written.
    ``task``: JSON-able facts (name, kind, label names, num_labels)."""
    model = task_model.model
    masks = current_masks(model) if method == "mask" else {}
    config = {"format": FORMAT, "method": method, "task": task, "base_model": base_model,
              "base_fingerprint": task_model.base_fingerprint, "model_class": type(model).__name__,
              "tau": tau, "pattern": pattern,
              "masked_layers": {name: list(keep.shape) for name, keep in masks.items()},
              "head": {name: list(t.shape) for name, t in head_state(model, task_model.head).items()}}
    sizes = {}

    def write(tmp: str) -> None:
        if masks:
            save_file({name: pack_bits(keep) for name, keep in masks.items()}, os.path.join(tmp, MASK_NAME))
        save_file(head_state(model, task_model.head), os.path.join(tmp, HEAD_NAME))
        with open(os.path.join(tmp, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        for name in sorted(os.listdir(tmp)):
            sizes[name] = os.path.getsize(os.path.join(tmp, name))

    save_directory_atomic(directory, write)
    return sizes


def read_adapter_config(directory: str) -> dict:
    directory = os.fspath(directory)
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isdir(directory):
        raise ArtifactError(f"no adapter at {directory!r} (not a directory)")
    if not os.path.isfile(path):
        raise ArtifactError(f"{directory!r} is not a maskpolicy adapter: {CONFIG_NAME} is missing")
    try:
        config = json.loads(read_text(path, fix="write the adapter again", error=ArtifactError))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path!r} is corrupt (not readable JSON): {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ArtifactError(f"{path!r} has format {found!r}; expected {FORMAT!r}")
    needed = {"method": str, "task": dict, "base_model": str, "base_fingerprint": str,
              "masked_layers": dict, "head": dict}
    for key, kind in needed.items():
        if not isinstance(config.get(key), kind):
            raise ArtifactError(f"{path!r} is incomplete: {key!r} missing or not a {kind.__name__}")
    if config["method"] == "mask" and not config["masked_layers"]:
        raise ArtifactError(f"{path!r} is incomplete: a mask adapter with no masked layers")
    return config


def _read_tensors(directory: str, name: str, expected: dict[str, list[int]], packed: bool) -> dict[str, torch.Tensor]:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise ArtifactError(f"{directory!r} is incomplete: {name} is missing")
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError) as err:
        raise ArtifactError(f"{path!r} is corrupt: {err}") from None
    if set(state) != set(expected):
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ArtifactError(f"{path!r} does not match {CONFIG_NAME}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if packed:
        out = {}
        for key, shape in expected.items():
            try:
                out[key] = unpack_bits(state[key], tuple(shape))
            except ValueError as err:
                raise ArtifactError(f"{path!r}: layer {key}: {err}") from None
        return out
    for key, shape in expected.items():
        if list(state[key].shape) != list(shape):
            raise ArtifactError(f"{path!r}: {key} has shape {list(state[key].shape)}, {CONFIG_NAME} says {shape}")
    return state


def apply_adapter(task_model, directory: str, config: dict | None = None):
    """Put the adapter in ``directory`` onto ``task_model`` (built from its base, in place):
    fixed masks on the named layers and the stored head. Refuses another base."""
    config = config or read_adapter_config(directory)
    if task_model.base_fingerprint != config["base_fingerprint"]:
        raise ArtifactError(f"the adapter in {directory!r} was trained on another base model (its body "
                            f"fingerprint {config['base_fingerprint'][:12]}..., this base's "
                            f"{task_model.base_fingerprint[:12]}...): masks are only valid on the exact weights "
                            f"they were trained on; load it onto {config['base_model']!r}")
    if sorted(config["head"]) != sorted(task_model.head):
        raise ArtifactError(f"the adapter's head {sorted(config['head'])[:3]} does not fit "
                            f"{type(task_model.model).__name__}'s head {sorted(task_model.head)[:3]}")
    head = _read_tensors(directory, HEAD_NAME, config["head"], packed=False)
    keeps = _read_tensors(directory, MASK_NAME, config["masked_layers"], packed=True) if config["masked_layers"] else {}
    params = dict(task_model.model.named_parameters())
    with torch.no_grad():
        for name, tensor in head.items():
            if tuple(params[name].shape) != tuple(tensor.shape):
                raise ArtifactError(f"the adapter's {name} has shape {tuple(tensor.shape)}, the model's "
                                    f"{tuple(params[name].shape)}")
            params[name].copy_(tensor)
    try:
        attach_fixed_masks(task_model.model, keeps)
    except ConfigError as err:
        raise ArtifactError(f"the adapter in {directory!r} does not fit the model: {err}") from None
    return task_model


def base_task_model(config: dict, base: str):
    """The bare task model an adapter ``config`` describes, built on ``base`` (no mask, a
    fresh head), and the base's tokenizer."""
    task = config["task"]
    if task.get("kind") not in ("classification", "cloze"):
        raise ArtifactError(f"the adapter's task kind {task.get('kind')!r} is neither classification nor cloze")
    lm, _ = load_masked_lm_reporting(base)
    tokenizer = load_tokenizer(base)
    stub = Task(name=task.get("name", "task"), kind=task["kind"], corpus=[], label_names=task.get("label_names") or [])
    return build_task_model(lm, stub, num_labels=task.get("num_labels")), tokenizer


def load_adapted(adapter: str, base: str | None = None):
    """The task model of a saved adapter on ``base`` (default: the base it names), in eval
    mode, and the base's tokenizer. Refuses a base with other body weights."""
    config = read_adapter_config(adapter)
    task_model, tokenizer = base_task_model(config, base or config["base_model"])
    with torch.no_grad():
        apply_adapter(task_model, adapter, config)
    task_model.model.eval()
    return task_model, tokenizer
