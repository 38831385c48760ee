"""Custom tasks defined in local files, without code.

A task is a directory holding ``task.yaml`` (or ``task.yml`` / ``task.json``), or the path
of such a spec file. Paths inside the spec are relative to the spec file.

.. code-block:: yaml

    name: my-sentiment            # task name (default: the directory name)
    type: classification          # classification | cloze
    corpus: corpus.txt            # unlabelled intermediate corpus (required, non-empty)
    train: train.csv              # downstream training data (required, non-empty)
    eval: eval.jsonl              # downstream evaluation data (required, non-empty)
    eval_corpus: heldout.txt      # optional: held-out passages for masked-LM evaluation
    description: free text        # optional

Corpus files: ``.txt`` = one passage per non-empty line; ``.jsonl`` = one object per line
with ``text`` and optionally ``key`` (links passages to the questions about the same thing).

Classification rows (``.csv`` with a header, or ``.jsonl``): ``text`` and ``label``. String
labels map to ``label_names`` = the sorted distinct labels of train+eval; integer labels
(or CSV labels that are all digits) are kept as they are, with ``label_names`` "0".."max".

Cloze rows (``.jsonl``), one of two forms:

- ``{"question": "Dravik was born in [BLANK] .", "answers": ["Velmora"], "key": "dravik"}``:
  the question holds ``[BLANK]`` exactly once; ``key`` is optional;
- ``{"question": "Where was Dravik born?", "context": "...", "answer_start": 17,
  "answers": ["Velmora"]}``: the cloze is the sentence of ``context`` holding
  ``answers[0]`` at ``answer_start``, with that answer replaced by ``[BLANK]``.

The first answer decides how many ``[MASK]`` tokens are shown; answers may be multi-word.
Gold spans (the supervision for span-aware policies): each question's first answer is
looked up (case-sensitive, whole words) in the corpus passages whose key equals the
question's key exactly, or in every passage when the question or the corpus has no keys;
each hit becomes a ``Span`` with the question's split (``train`` / ``eval``). Questions
without any hit are counted per split in ``Task.gold_span_report`` and one ``UserWarning``
names them, with the likely cause (keys differing only in case, answer only under another
key) when that is what happened.

Errors (``DataError``) name the file and, for row errors, the line number.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from collections import defaultdict

import yaml

from maskpolicy.policies.errors import DataError
from maskpolicy.policies.paths import read_text, utf8_errors

from .base import BLANK, ClozeQuestion, LabeledText, Passage, Span, Task
from .text import cloze_from_context, find_whole_word, words_of

SPEC_NAMES = ("task.yaml", "task.yml", "task.json")
TASK_TYPES = ("classification", "cloze")


def find_spec(path: str) -> str:
    """The spec file of a task directory (or ``path`` itself when it is a file)."""
    if os.path.isdir(path):
        for name in SPEC_NAMES:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise DataError(f"task directory {path} holds no {' / '.join(SPEC_NAMES)}")
    if os.path.isfile(path):
        return path
    raise DataError(f"task path not found: {path} (expected a directory with task.yaml or a spec file)")


def read_spec(spec_path: str) -> dict:
    text = read_text(spec_path)
    try:
        spec = json.loads(text) if spec_path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{spec_path}: line {err.lineno}: invalid JSON: {err.msg}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise DataError(f"{spec_path}: {where}invalid YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(spec, dict):
        raise DataError(f"{spec_path}: expected a mapping of keys (name, type, corpus, train, eval)")
    return spec


def _rows(path: str) -> list[tuple[int, dict]]:
    """``(line_number, row)`` of a ``.jsonl`` or ``.csv`` file (blank lines skipped)."""
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    out: list[tuple[int, dict]] = []
    if path.endswith(".jsonl"):
        with utf8_errors(path), open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}: line {line_no}: invalid JSON: {err.msg}") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}: line {line_no}: expected a JSON object, got {type(row).__name__}")
                out.append((line_no, row))
    elif path.endswith(".csv"):
        with utf8_errors(path), open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                if any(isinstance(v, str) and v.strip() for v in row.values()):
                    out.append((reader.line_num, row))
    else:
        raise DataError(f"{path}: unsupported file type (expected .csv or .jsonl)")
    if not out:
        raise DataError(f"{path}: file is empty")
    return out


def _field(path: str, line_no: int, row: dict, name: str):
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}: line {line_no}: missing field {name!r}")
    return value


def read_corpus(path: str) -> list[Passage]:
    """Passages of a ``.txt`` (one per line) or ``.jsonl`` (``text``, optional ``key``) file."""
    if path.endswith(".txt"):
        if not os.path.isfile(path):
            raise DataError(f"corpus file not found: {path}")
        with utf8_errors(path), open(path, encoding="utf-8") as fh:
            passages = [Passage(line.strip()) for line in fh if line.strip()]
        if not passages:
            raise DataError(f"{path}: the corpus is empty")
        return passages
    if path.endswith(".jsonl"):
        passages = []
        for line_no, row in _rows(path):
            key = row.get("key")
            passages.append(Passage(str(_field(path, line_no, row, "text")).strip(),
                                    key=None if key is None else str(key)))
        return passages
    raise DataError(f"{path}: unsupported corpus file type (expected .txt or .jsonl)")


def _read_classification(path: str) -> list[tuple[int, str, object]]:
    return [(line_no, str(_field(path, line_no, row, "text")), _field(path, line_no, row, "label"))
            for line_no, row in _rows(path)]


def _label_mapping(labels: list[object]) -> tuple[dict, list[str]]:
    """Raw label -> int, and label_names. Ints (or all-digit strings) are kept as ints."""
    if all((isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, str) and x.strip().isdigit())
           for x in labels):
        ints = sorted({int(x) for x in labels})
        if ints[0] < 0:
            raise DataError(f"integer labels must be >= 0, got {ints[0]}")
        return {x: int(x) for x in labels}, [str(i) for i in range(ints[-1] + 1)]
    names = sorted({str(x).strip() for x in labels})
    return {x: names.index(str(x).strip()) for x in labels}, names


def _read_cloze(path: str) -> list[ClozeQuestion]:
    if not path.endswith(".jsonl"):
        raise DataError(f"{path}: cloze questions must be a .jsonl file")
    out = []
    for line_no, row in _rows(path):
        where = f"{path}: line {line_no}"
        answers = _field(path, line_no, row, "answers")
        answers = [answers] if isinstance(answers, str) else answers
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise DataError(f"{where}: 'answers' must be a non-empty list of strings")
        key = None if row.get("key") is None else str(row["key"])
        if row.get("context") is not None:
            start = _field(path, line_no, row, "answer_start")
            if not isinstance(start, int) or isinstance(start, bool):
                raise DataError(f"{where}: 'answer_start' must be an integer")
            try:
                cloze = cloze_from_context(str(row["context"]), start, answers[0])
            except ValueError as err:
                raise DataError(f"{where}: {err}") from None
            # No offsets for the other answers: they count when they occur in the sentence.
            extra = [a for a in dict.fromkeys(answers[1:]) if a != answers[0] and a in cloze.sentence]
            out.append(ClozeQuestion(cloze.text, cloze.answers + extra, key=key))
            continue
        question = str(_field(path, line_no, row, "question"))
        if question.count(BLANK) != 1:
            raise DataError(f"{where}: question must contain {BLANK} exactly once "
                            f"(or give 'context' and 'answer_start'): {question[:80]!r}")
        out.append(ClozeQuestion(question, list(answers), key=key))
    return out


GOLD_SPAN_RULE = ("answers are located case-sensitively as whole words in passages whose `key` equals the "
                  "question's key exactly, or in every passage when the question or the corpus has no keys")
"""How ``locate_answer_spans`` finds gold spans (quoted in warnings, errors and reports)."""


def locate_answer_spans(corpus: list[Passage], questions: list[tuple[ClozeQuestion, str]]) -> tuple[int, dict]:
    """Mark each question's first answer in the corpus (whole words, case-sensitive).

    ``questions`` = ``(question, split)`` pairs. With keys on both sides, a question only
    looks at passages with its key (compared exactly). A word index narrows the candidates
    before the exact match, so large corpora stay fast. Returns ``(spans added, report)``;
    the report (JSON-serialisable, stored as ``Task.gold_span_report``) is::

        {"rule": GOLD_SPAN_RULE,
         "train": {"questions": 40, "without_span": 12,   # no hit in any passage
                   "key_case": 8,    # of those: found when keys are compared case-insensitively
                   "other_key": 1},  # found only in passages with another key
         "eval": {...},
         "key_case_example": ["Acme", "acme"]}   # (question key, passage key), when key_case > 0

    The two diagnoses only run for questions without a span, over the passages that hold
    every word of the answer, so they cost little.
    """
    by_key: dict[str, set[int]] = defaultdict(set)
    by_folded_key: dict[str, set[int]] = defaultdict(set)
    by_word: dict[str, set[int]] = defaultdict(set)
    for i, p in enumerate(corpus):
        if p.key is not None:
            by_key[p.key].add(i)
            by_folded_key[p.key.casefold()].add(i)
        for w in words_of(p.text):
            by_word[w].add(i)
    report: dict = {"rule": GOLD_SPAN_RULE}
    for _, split in questions:
        report.setdefault(split, {"questions": 0, "without_span": 0, "key_case": 0, "other_key": 0})

    def first_hit(indices: set[int], answer: str) -> int | None:
        return next((i for i in sorted(indices) if find_whole_word(corpus[i].text, answer)), None)

    added = 0
    for question, split in questions:
        answer = question.answers[0]
        words = words_of(answer)
        holding = set.intersection(*(by_word.get(w, set()) for w in words)) if words else set(range(len(corpus)))
        keyed = bool(by_key) and question.key is not None
        candidates = holding & by_key.get(question.key, set()) if keyed else holding
        hit = False
        for i in sorted(candidates):
            passage = corpus[i]
            for start, end in find_whole_word(passage.text, answer):
                hit = True
                span = Span(start, end, split)
                if span not in passage.spans:
                    passage.spans.append(span)
                    added += 1
        entry = report[split]
        entry["questions"] += 1
        if hit:
            continue
        entry["without_span"] += 1
        if not keyed:
            continue
        case_hit = first_hit((holding & by_folded_key.get(question.key.casefold(), set())) - candidates, answer)
        if case_hit is not None:
            entry["key_case"] += 1
            report.setdefault("key_case_example", [question.key, corpus[case_hit].key])
        elif first_hit(holding - candidates, answer) is not None:
            entry["other_key"] += 1
    return added, report


def add_answer_spans(corpus: list[Passage], questions: list[tuple[ClozeQuestion, str]]) -> int:
    """``locate_answer_spans`` without the report: how many spans were added."""
    return locate_answer_spans(corpus, questions)[0]


def report_splits(report: dict) -> dict[str, dict]:
    """The per-split entries of a gold-span report (``{"train": {...}, "eval": {...}}``)."""
    return {k: v for k, v in report.items() if isinstance(v, dict) and "questions" in v}


def gold_span_summary(report: dict) -> str:
    """One line: how many questions per split have no gold span, the rule, and the likely
    cause when ``locate_answer_spans`` found one, e.g. "12 of 40 train and 0 of 10 eval
    questions have no gold span in the corpus (answers are located ...); 8 would match
    with keys compared case-insensitively (e.g. question key 'Acme', passage key 'acme')"."""
    splits = report_splits(report).items()
    counts = " and ".join(f"{e['without_span']} of {e['questions']} {name}" for name, e in splits)
    text = f"{counts} questions have no gold span in the corpus ({report.get('rule', GOLD_SPAN_RULE)})"
    key_case = sum(e.get("key_case", 0) for _, e in splits)
    other_key = sum(e.get("other_key", 0) for _, e in splits)
    causes = []
    if key_case:
        example = report.get("key_case_example")
        causes.append(f"{key_case} would match with keys compared case-insensitively"
                      + (f" (e.g. question key {example[0]!r}, passage key {example[1]!r})" if example else ""))
    if other_key:
        causes.append(f"{other_key} would match without the key restriction (the answer is only in "
                      "passages with another key)")
    return text + ("; " + ", ".join(causes) if causes else "")


def questions_without_span(report: dict | None) -> int:
    return sum(e["without_span"] for e in report_splits(report).values()) if report else 0


def load_task_from_files(path: str, seed: int = 0) -> Task:
    """Build a ``Task`` from a task directory or spec file (see the module docstring).

    ``seed`` is accepted for a uniform ``get_task`` signature; file tasks carry their own
    splits, so nothing here is random.
    """
    spec_path = find_spec(path)
    spec = read_spec(spec_path)
    base = os.path.dirname(os.path.abspath(spec_path))
    missing = [k for k in ("type", "corpus", "train", "eval") if not spec.get(k)]
    if missing:
        raise DataError(f"{spec_path}: missing key(s) {', '.join(missing)} "
                        "(a task spec needs type, corpus, train and eval)")
    kind = str(spec["type"])
    if kind not in TASK_TYPES:
        raise DataError(f"{spec_path}: unknown task type {kind!r}; expected one of {', '.join(TASK_TYPES)}")
    name = str(spec.get("name") or os.path.basename(base))

    def resolve(key: str) -> str:
        return os.path.join(base, str(spec[key]))

    corpus = read_corpus(resolve("corpus"))
    eval_corpus = read_corpus(resolve("eval_corpus")) if spec.get("eval_corpus") else []
    gold_span_report = None
    if kind == "classification":
        train_rows, eval_rows = _read_classification(resolve("train")), _read_classification(resolve("eval"))
        mapping, label_names = _label_mapping([r[2] for r in train_rows + eval_rows])
        train = [LabeledText(text, mapping[label]) for _, text, label in train_rows]
        evaluation = [LabeledText(text, mapping[label]) for _, text, label in eval_rows]
    else:
        label_names = []
        train, evaluation = _read_cloze(resolve("train")), _read_cloze(resolve("eval"))
        _, gold_span_report = locate_answer_spans(corpus, [(q, "train") for q in train] +
                                                  [(q, "eval") for q in evaluation])
        if questions_without_span(gold_span_report):
            warnings.warn(f"task {name!r}: {gold_span_summary(gold_span_report)}; the salient_span oracle falls "
                          "back to its capitalised-word heuristic on passages without gold spans "
                          f"(see them with: maskpolicy show --task {path} --policy salient_span --passages 5)",
                          UserWarning, stacklevel=2)
    return Task(name=name, kind=kind, corpus=corpus, train=train, eval=evaluation, label_names=label_names,
                eval_corpus=eval_corpus, gold_span_report=gold_span_report,
                description=str(spec.get("description") or
                                f"{kind} task from {spec_path}: {len(corpus)} corpus passages, "
                                f"{len(train)} train / {len(evaluation)} eval"))
