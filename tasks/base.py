"""What a task is: an intermediate corpus, downstream data, a metric and a supervision signal.

Every task, built-in or read from files, is one ``Task``. Layers above (train/, meta/,
benchmarks/) only ever see these dataclasses, never the files they came from.

Kinds:
- ``cloze``: closed-book cloze QA. Each question holds one ``BLANK`` marker where the answer
  goes; the model sees the question with the blank replaced by as many ``[MASK]`` tokens as
  the answer has tokens and must fill them in (exact match).
- ``classification``: ``text -> label``; evaluated by fine-tuning and accuracy.
- ``corpus``: no downstream data; evaluated by masked-token accuracy on held-out passages
  (used for general pre-training, e.g. WikiText-2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BLANK = "[BLANK]"
"""Marker for the answer slot inside a cloze question's text."""

TaskKind = Literal["cloze", "classification", "corpus"]


@dataclass(frozen=True)
class Span:
    """A gold answer span inside a passage, in character offsets ``text[start:end]``.

    ``split`` says which questions the span answers: ``"train"`` spans may be used to learn
    a policy; ``"eval"`` spans are only for the gold-span oracle (``salient_span``) and for
    measuring a policy's answer recall, never for training.
    """

    start: int
    end: int
    split: Literal["train", "eval"] = "train"


@dataclass
class Passage:
    """One unit of the intermediate pre-training corpus (one training sequence)."""

    text: str
    spans: list[Span] = field(default_factory=list)
    key: str | None = None
    """Links the passage to the questions about the same thing (entity id, paragraph id).
    Meta-learning pairs inner (corpus) and outer (question) batches through it."""


@dataclass
class ClozeQuestion:
    text: str  # contains BLANK exactly once
    answers: list[str]  # first one decides how many [MASK] tokens are shown
    key: str | None = None


@dataclass
class LabeledText:
    text: str
    label: int


@dataclass
class Task:
    name: str
    kind: TaskKind
    corpus: list[Passage]
    train: list = field(default_factory=list)  # ClozeQuestion | LabeledText
    eval: list = field(default_factory=list)  # ClozeQuestion | LabeledText
    label_names: list[str] = field(default_factory=list)  # classification only
    eval_corpus: list[Passage] = field(default_factory=list)  # held-out passages (MLM eval)
    description: str = ""
    tokenizer_texts: list[str] | None = None
    """Texts to build the tokenizer from instead of this task's own: a family of tasks
    (the synthetic world's relations) shares one tokenizer, so a policy learned on one
    task can drive another's pre-training."""
    gold_span_report: dict | None = None
    """Cloze tasks from files: how many questions got no gold span, per split, and the rule
    that located them (``maskpolicy.tasks.files.locate_answer_spans``); JSON-serialisable. None when
    the task's spans do not come from locating answers (built-in tasks)."""

    def texts_for_tokenizer(self) -> list[str]:
        """Every text the task's tokenizer should cover (corpus, questions, labelled texts),
        or ``tokenizer_texts`` when the task belongs to a family with a shared tokenizer."""
        if self.tokenizer_texts is not None:
            return list(self.tokenizer_texts)
        out = [p.text for p in self.corpus] + [p.text for p in self.eval_corpus]
        for ex in list(self.train) + list(self.eval):
            if isinstance(ex, ClozeQuestion):
                out.append(ex.text.replace(BLANK, " "))
                out.extend(ex.answers)
            else:
                out.append(ex.text)
        return out

    @property
    def has_spans(self) -> bool:
        return any(p.spans for p in self.corpus)
