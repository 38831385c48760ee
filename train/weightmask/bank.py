"""Many tasks on one backbone: N adapters share one copy of the base weights.

Each masked layer carries one ``BankMask`` parametrization holding every task's packed
mask (1 bit per weight per task, uint8 buffers); the active task's mask is unpacked on
the fly in the forward pass, so no unpacked mask and no copy of a weight outlives a call.
Heads are small and per task: activating a task points the head's parameters at that
task's tensors (no copy). Memory for N tasks: one model + N x (weights / 32 + head).

    bank = MaskBank.from_adapters({"mr": "runs/ft-mr/adapter", "sst2": "runs/ft-sst2/adapter"})
    logits = bank("mr", input_ids=..., attention_mask=...).logits
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from maskpolicy.policies.errors import ArtifactError, ConfigError

from .artifact import HEAD_NAME, MASK_NAME, _read_tensors, base_task_model, read_adapter_config
from .packing import pack_bits, unpack_bits


class BankMask(nn.Module):
    """Parametrization ``W -> W * m[active]`` over packed per-task masks; a task without a
    mask for this layer leaves the weight whole."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.tasks: list[str] = []
        self.active: str | None = None

    def add(self, task: str, packed: torch.Tensor) -> None:
        self.register_buffer(f"packed_{len(self.tasks)}", packed)
        self.tasks.append(task)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.active not in self.tasks:
            return weight
        packed = getattr(self, f"packed_{self.tasks.index(self.active)}")
        return weight * unpack_bits(packed, self.shape).to(weight.dtype)


class MaskBank:
    """One base task model, N task adapters; ``bank(task, **inputs)`` runs one task."""

    def __init__(self, task_model) -> None:
        self.task_model = task_model
        self.model = task_model.model
        self.heads: dict[str, dict[str, nn.Parameter]] = {}
        self.num_labels: dict[str, int | None] = {}
        self.active: str | None = None
        self._layers: dict[str, BankMask] = {}
        # Every (module, attribute) that holds each head parameter: a tied parameter (BERT's
        # MLM output bias is both ``cls.predictions.bias`` and ``...decoder.bias``) is
        # pointed at the task's tensor under each of its names.
        params = dict(self.model.named_parameters())
        holders: dict[int, list] = {}
        for module in self.model.modules():
            for leaf, param in module._parameters.items():
                if param is not None:
                    holders.setdefault(id(param), []).append((module, leaf))
        self._holders = {name: holders[id(params[name])] for name in task_model.head}

    @classmethod
    def from_adapters(cls, adapters: dict[str, str], base: str | None = None) -> "MaskBank":
        """Load every adapter onto one base (default: the base the first adapter names)."""
        if not adapters:
            raise ConfigError("a mask bank needs at least one adapter")
        config = read_adapter_config(next(iter(adapters.values())))
        task_model, tokenizer = base_task_model(config, base or config["base_model"])
        task_model.model.eval()  # serving: no dropout
        bank = cls(task_model)
        bank.tokenizer = tokenizer
        for name, directory in adapters.items():
            bank.add(name, directory)
        return bank

    def add(self, task: str, directory: str) -> None:
        if task in self.heads:
            raise ConfigError(f"task {task!r} is already in the bank")
        config = read_adapter_config(directory)
        if config["base_fingerprint"] != self.task_model.base_fingerprint:
            raise ArtifactError(f"adapter {directory!r} was trained on another base model than the bank's")
        if config["model_class"] != type(self.model).__name__:
            raise ArtifactError(f"adapter {directory!r} is for a {config['model_class']}, the bank holds a "
                                f"{type(self.model).__name__}: one bank serves one kind of task model")
        if sorted(config["head"]) != sorted(self.task_model.head):
            raise ArtifactError(f"adapter {directory!r} has another head than the bank's model")
        head = _read_tensors(directory, HEAD_NAME, config["head"], packed=False)
        keeps = _read_tensors(directory, MASK_NAME, config["masked_layers"], packed=True) if config["masked_layers"] else {}
        modules = dict(self.model.named_modules())
        for layer, keep in keeps.items():
            module = modules.get(layer)
            if not isinstance(module, nn.Linear) or tuple(keep.shape) != tuple(_base_weight(module).shape):
                raise ArtifactError(f"adapter {directory!r}: layer {layer} does not fit the bank's model")
            if layer not in self._layers:
                self._layers[layer] = BankMask(keep.shape)
                parametrize.register_parametrization(module, "weight", self._layers[layer], unsafe=True)
                module.parametrizations.weight.original.requires_grad_(False)
            device = _base_weight(module).device
            self._layers[layer].add(task, pack_bits(keep).to(device))
        device = next(self.model.parameters()).device
        self.heads[task] = {name: nn.Parameter(t.to(device), requires_grad=False) for name, t in head.items()}
        self.num_labels[task] = config["task"].get("num_labels")

    def activate(self, task: str) -> None:
        if task not in self.heads:
            raise ConfigError(f"task {task!r} is not in the bank (it holds {', '.join(self.heads)})")
        for layer in self._layers.values():
            layer.active = task
        for name, param in self.heads[task].items():
            for module, leaf in self._holders[name]:
                module._parameters[leaf] = param  # points at the task's tensor: no copy
        if self.num_labels[task]:
            self.model.num_labels = self.num_labels[task]
            self.model.config.num_labels = self.num_labels[task]
        self.active = task

    @contextmanager
    def task(self, task: str):
        previous = self.active
        self.activate(task)
        try:
            yield self.model
        finally:
            if previous is not None:
                self.activate(previous)

    @torch.no_grad()
    def __call__(self, task: str, **inputs):
        self.activate(task)
        return self.model(**inputs)

    def memory_bytes(self) -> dict:
        """Bytes held: the shared base (parameters and buffers outside the bank), the packed
        masks and the heads of every task."""
        masks = sum(b.numel() * b.element_size() for layer in self._layers.values() for b in layer.buffers())
        heads = sum(t.numel() * t.element_size() for head in self.heads.values() for t in head.values())
        active_head = {id(p) for p in self.heads[self.active].values()} if self.active else set()
        base = sum(t.numel() * t.element_size() for t in _unique_tensors(self.model) if id(t) not in active_head) - masks
        return {"base": base, "masks": masks, "heads": heads, "total": base + masks + heads}


def _base_weight(module: nn.Module) -> torch.Tensor:
    return module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight") else module.weight


def _unique_tensors(model: nn.Module):
    seen = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            yield t
