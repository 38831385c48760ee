"""Errors every layer raises for bad input.

They live in the lowest layer so that tasks/, train/, meta/ and benchmarks/ can all raise
them; the CLI turns any ``MaskpolicyError`` into a one-line message and exit code 2.
"""


class MaskpolicyError(Exception):
    """Base class: bad input that the user can fix (never a bug in maskpolicy)."""


class ConfigError(MaskpolicyError, ValueError):
    """An option or config value is missing, unknown or out of range."""


class DataError(MaskpolicyError, ValueError):
    """A data file, corpus or task definition is missing, empty or malformed."""


class ArtifactError(MaskpolicyError, OSError):
    """A model, policy or checkpoint directory is missing, incomplete, corrupt or mismatched."""
