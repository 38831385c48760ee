"""Plain-text helpers shared by the real-data loaders and file-defined tasks.

- ``sentence_bounds``: where the sentences of a text are, as character offsets, never
  cutting through a protected range (an answer that contains "St. Louis" stays whole);
- ``chunk_passages``: long documents -> passages of at most ``max_words`` words, cut on
  sentence boundaries (one training sequence each);
- ``cloze_from_context``: (context, answer_start, answers) -> the sentence holding the
  answer with the answer replaced by ``BLANK`` (SQuAD-style data and ``files.py``);
- ``find_whole_word``: case-sensitive whole-word occurrences of a (multi-word) phrase.

Character offsets matter because gold ``Span``s are stored as offsets into passage texts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .base import BLANK

# A sentence ends at . ! or ? (optionally followed by closing quotes/brackets) when
# whitespace and an upper-case letter, a digit or an opening quote/bracket come next.
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*\s+(?=[A-Z0-9\"'“‘(\[])")
# "Dr. Who", "H. gammarus", "U.S. Army": not sentence ends.
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "vs", "no", "mt", "ft", "gen", "col", "lt",
                  "sgt", "capt", "gov", "sen", "rep", "rev", "inc", "co", "corp", "ltd", "jan", "feb", "mar", "apr",
                  "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "e.g", "i.e", "etc", "approx", "fig"}
_WORD = re.compile(r"\w+")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the '.' at ``text[dot]`` ends an abbreviation or an initial."""
    if text[dot] != ".":
        return False
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].strip("\"'(“‘[").lower()
    return (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS or ("." in word and len(word) <= 4)


def sentence_bounds(text: str, protect: list[tuple[int, int]] | tuple = ()) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the sentences of ``text``, whitespace-trimmed, in order.

    No boundary falls strictly inside a ``protect`` range ``[start, end)``. A text without
    any boundary is one sentence; an all-whitespace text has none.
    """
    cuts = [0]
    for m in _BOUNDARY.finditer(text):
        end_of_punct = m.start() + len(m.group().rstrip())  # sentence ends after punctuation/quotes
        if _is_abbreviation(text, m.start()):
            continue
        if any(s < end_of_punct < e or s < m.end() < e for s, e in protect):
            continue
        cuts.append(m.end())
    cuts.append(len(text))
    bounds = []
    for a, b in zip(cuts, cuts[1:]):
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if b - trail > a + lead:
            bounds.append((a + lead, b - trail))
    return bounds


def split_sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_bounds(text)]


def chunk_passages(text: str, max_words: int = 60) -> list[str]:
    """Pack consecutive sentences into passages of at most ``max_words`` words.

    A single sentence longer than ``max_words`` is cut into word windows, so no passage
    ever exceeds the limit (which keeps them inside a model's ``max_length``).
    """
    out: list[str] = []
    current: list[str] = []
    for sentence in split_sentences(text):
        words = sentence.split()
        while len(words) > max_words:  # an over-long "sentence" (lists, missing punctuation)
            if current:
                out.append(" ".join(current))
                current = []
            out.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if current and len(current) + len(words) > max_words:
            out.append(" ".join(current))
            current = []
        current.extend(words)
    if current:
        out.append(" ".join(current))
    return out


@dataclass
class ContextCloze:
    """A cloze item cut from a context: ``text`` holds ``BLANK`` once; ``sentence`` is the
    original sentence and ``[start, end)`` the answer's offsets inside it."""

    text: str
    answers: list[str]
    sentence: str
    start: int
    end: int
    sentence_start: int  # offset of the sentence inside the context


def cloze_from_context(context: str, answer_start: int, answer: str,
                       other_answers: list[tuple[int, str]] = (),
                       bounds: list[tuple[int, int]] | None = None) -> ContextCloze:
    """The sentence of ``context`` holding ``context[answer_start:answer_start+len(answer)]``,
    with that occurrence replaced by ``BLANK``.

    ``answers`` = ``answer`` first, then the distinct texts of ``other_answers``
    (``(start, text)`` pairs) that lie inside the same sentence. ``bounds`` are the
    context's sentence bounds when the caller already has them (they must not cut the
    answer); by default they are computed protecting the answer. Raises ``ValueError``
    when the answer text is not at ``answer_start``.
    """
    end = answer_start + len(answer)
    if not answer or answer_start < 0 or context[answer_start:end] != answer:
        raise ValueError(f"answer {answer!r} is not at offset {answer_start} of the context "
                         f"(found {context[max(answer_start, 0):max(end, 0)]!r})")
    bounds = bounds if bounds is not None else sentence_bounds(context, [(answer_start, end)])
    s0, s1 = next(((a, b) for a, b in bounds if a <= answer_start and end <= b), (0, len(context)))
    sentence = context[s0:s1]
    text = sentence[: answer_start - s0] + BLANK + sentence[end - s0:]
    answers = [answer]
    for start, other in other_answers:
        if other and other not in answers and s0 <= start and start + len(other) <= s1 \
                and context[start:start + len(other)] == other:
            answers.append(other)
    return ContextCloze(text, answers, sentence, answer_start - s0, end - s0, s0)


def find_whole_word(text: str, phrase: str) -> list[tuple[int, int]]:
    """Case-sensitive occurrences of ``phrase`` not glued to letters/digits on either side."""
    if not phrase:
        return []
    pattern = re.compile(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)")
    return [(m.start(), m.end()) for m in pattern.finditer(text)]


def words_of(text: str) -> set[str]:
    """The ``\\w+`` words of a text (for a quick word index before exact matching)."""
    return set(_WORD.findall(text))
