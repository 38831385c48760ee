"""Policies registered by name: ``get_policy("span", tokenizer, rate=...)``.

A name that is a directory is loaded as a saved (learned) policy through the loader that
the policy-network module registers, so callers never need to know which kind they hold.
"""
from __future__ import annotations

import inspect
import os
from typing import Callable

from .base import MaskingPolicy
from .errors import ConfigError

_POLICIES: dict[str, type[MaskingPolicy]] = {}
_DIRECTORY_LOADER: list[Callable] = []


def register_policy(name: str):
    def wrap(cls: type[MaskingPolicy]) -> type[MaskingPolicy]:
        if name in _POLICIES and _POLICIES[name] is not cls:
            raise ValueError(f"policy name {name!r} registered twice")
        cls.name = name
        _POLICIES[name] = cls
        return cls

    return wrap


def register_directory_loader(loader: Callable) -> None:
    """``loader(path, tokenizer) -> MaskingPolicy`` for saved policies (one loader)."""
    _DIRECTORY_LOADER[:] = [loader]


def available_policies() -> list[str]:
    return sorted(_POLICIES)


def policy_class(name: str) -> type[MaskingPolicy]:
    if name not in _POLICIES:
        raise ConfigError(f"unknown policy {name!r}; known: {', '.join(available_policies())} (or a saved policy directory)")
    return _POLICIES[name]


def get_policy(name_or_path: str | MaskingPolicy, tokenizer=None, **options) -> MaskingPolicy:
    """Build a registered policy by name, or load a saved one from a directory."""
    if isinstance(name_or_path, MaskingPolicy):
        return name_or_path
    name = str(name_or_path)
    if name not in _POLICIES and (os.sep in name or os.path.exists(name)):
        if not _DIRECTORY_LOADER:
            raise ConfigError(f"{name!r} is not a registered policy name and no saved-policy loader is available")
        return _DIRECTORY_LOADER[0](name, tokenizer, **options)
    cls = policy_class(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "tokenizer", "vocab")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"policy {name!r} has no option {', '.join(map(repr, unknown))}; it accepts: {', '.join(accepted) or 'none'}"
        )
    return cls(tokenizer, **options)
