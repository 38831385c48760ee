"""Span corruption for encoder-decoder models: a token mask in, encoder input and decoder
target out, one sequence at a time.

Every maximal run of masked positions is one *span*. In the encoder input each span is
replaced by one marker token: the tokenizer's mask token for every span (BART text
infilling, ``corruption="mask"``) or the k-th sentinel for the k-th span (T5 span
corruption, ``corruption="sentinel"``). The decoder target is either

- ``output="full"``: the original sequence, or
- ``output="spans"``: each span's tokens after its marker, then the end token:
  ``m_0 span_0 m_1 span_1 ... </s>`` (with sentinels, ``m_k`` is the k-th sentinel; with
  the mask token, every ``m_k`` is the mask token and the order links target to input).

``reconstruct`` inverts it (tests, and a check a user can run on their own data).
"""
from __future__ import annotations

from collections.abc import Sequence

from .errors import ConfigError

OUTPUTS = ("spans", "full")
CORRUPTIONS = ("mask", "sentinel")


def spans_of(mask: Sequence[bool]) -> list[tuple[int, int]]:
    """``[(start, end)]`` (end exclusive) of the maximal runs of True in ``mask``."""
    out, start = [], None
    for i, masked in enumerate(mask):
        if masked and start is None:
            start = i
        elif not masked and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(mask)))
    return out


def corrupt_spans(ids: Sequence[int], mask: Sequence[bool], markers: Sequence[int], *, output: str,
                  end_id: int | None) -> tuple[list[int], list[int]]:
    """(encoder ids, decoder target) of one unpadded sequence. ``markers``: one id per span
    in order (the mask token repeated, or sentinels 0, 1, ...); ``end_id`` closes a
    ``spans`` target (None: nothing appended)."""
    spans = spans_of(mask)
    if len(markers) < len(spans):
        raise ConfigError(f"a sequence has {len(spans)} masked spans but only {len(markers)} sentinel tokens; "
                          f"add sentinels to the tokenizer or lower the mask rate")
    encoder, target, last = [], [], 0
    for k, (start, end) in enumerate(spans):
        encoder.extend(ids[last:start])
        encoder.append(markers[k])
        target.append(markers[k])
        target.extend(ids[start:end])
        last = end
    encoder.extend(ids[last:])
    if output == "full":
        return encoder, list(ids)
    return encoder, target + ([end_id] if end_id is not None else [])


def target_sources(mask: Sequence[bool], output: str, end: bool) -> list[int]:
    """For each token of ``corrupt_spans``'s target, the position in the sequence it
    reconstructs; -1 for markers, the end token (``end``: one was appended) and, in
    ``full``, the copies of unmasked tokens."""
    if output == "full":
        return [i if masked else -1 for i, masked in enumerate(mask)]
    out = []
    for start, stop in spans_of(mask):
        out.append(-1)  # the span's marker
        out.extend(range(start, stop))
    return out + ([-1] if end else [])


def reconstruct(encoder: Sequence[int], target: Sequence[int], markers: Sequence[int], end_id: int | None) -> list[int]:
    """The original sequence from a ``spans`` pair: the k-th marker met in ``encoder`` is
    replaced by the tokens after the k-th marker in ``target`` (markers are special tokens,
    so no span contains one)."""
    body = list(target)
    if end_id is not None and body and body[-1] == end_id:
        body = body[:-1]
    marker_set = set(markers)
    pieces: list[list[int]] = []
    for token in body:
        if token in marker_set:
            pieces.append([])
        elif pieces:
            pieces[-1].append(token)
    out, k = [], 0
    for token in encoder:
        if token in marker_set and k < len(pieces):
            out.extend(pieces[k])
            k += 1
        else:
            out.append(token)
    return out
