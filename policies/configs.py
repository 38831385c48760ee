"""Building typed dataclass configs from plain dicts (YAML/JSON), with one-line errors.

Every layer reads configs the same way, so the helper lives in the lowest layer."""
from __future__ import annotations

from dataclasses import fields

from .errors import ConfigError


def config_from_dict(cls, data, what: str):
    """``cls(**data)``, refusing unknown keys and non-mappings with a ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} config must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**data)
    except TypeError as err:  # e.g. a nested value of the wrong shape
        raise ConfigError(f"bad {what} config: {err}") from None
