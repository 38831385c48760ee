"""Heuristic policies; importing this package registers them all."""
from . import pmi, random_tokens, salient_span, span, whole_word  # noqa: F401
