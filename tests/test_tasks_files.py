"""Custom tasks defined in local files (tasks/files.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.tasks.base import BLANK
from maskpolicy.tasks.files import load_task_from_files
from maskpolicy.tasks.registry import get_task


def _jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")



@pytest.fixture()
def cloze_dir(tmp_path: Path) -> Path:
    d = tmp_path / "qa"
    d.mkdir()
    (d / "task.json").write_text(json.dumps({"name": "qa", "type": "cloze", "corpus": "corpus.jsonl",
                                             "train": "train.jsonl", "eval": "eval.jsonl"}), encoding="utf-8")
    _jsonl(d / "corpus.jsonl", [
        {"text": "Ann was born in New York City .", "key": "ann"},
        {"text": "Anna moved to New York City later .", "key": "anna"},
        {"text": "Ann likes Anna .", "key": "ann"},
        {"text": "Bo works at Acme .", "key": "bo"},
    ])
    _jsonl(d / "train.jsonl", [
        {"question": "Ann was born in [BLANK] .", "answers": ["New York City", "NYC"], "key": "ann"},
    ])
    _jsonl(d / "eval.jsonl", [
        {"question": "Where does Bo work?", "context": "Bo is a clerk. Bo works at Acme. Bo likes tea.",
         "answer_start": 27, "answers": ["Acme"], "key": "bo"},
    ])
    return d


def test_classification_task_with_string_labels(cls_dir):
    task = get_task(str(cls_dir))
    assert task.name == "my-sentiment" and task.kind == "classification"
    assert [p.text for p in task.corpus] == ["a good film .", "the food was cold ."]
    assert task.label_names == ["meh", "neg", "pos"]  # sorted distinct labels
    assert [(e.text, e.label) for e in task.train] == [("great, really", 2), ("awful", 1), ("fine", 0)]
    assert [e.label for e in task.eval] == [2, 1]


def test_integer_labels_are_kept(cls_dir):
    (cls_dir / "train.csv").write_text("text,label\nx,0\ny,2\n", encoding="utf-8")
    _jsonl(cls_dir / "eval.jsonl", [{"text": "z", "label": 1}])
    task = load_task_from_files(str(cls_dir / "task.yaml"))  # the spec file itself works too
    assert [e.label for e in task.train + task.eval] == [0, 2, 1]
    assert task.label_names == ["0", "1", "2"]


def test_cloze_task_questions_and_spans(cloze_dir):
    task = get_task(str(cloze_dir))
    assert task.kind == "cloze" and task.name == "qa"
    (train,) = task.train
    (evaluation,) = task.eval
    assert train.text == f"Ann was born in {BLANK} ." and train.answers == ["New York City", "NYC"]
    assert evaluation.text == f"Bo works at {BLANK}." and evaluation.answers == ["Acme"] and evaluation.key == "bo"
    spans = {p.text: [(p.text[s.start:s.end], s.split) for s in p.spans] for p in task.corpus}
    assert spans["Ann was born in New York City ."] == [("New York City", "train")]
    assert spans["Anna moved to New York City later ."] == []  # another key: not marked
    assert spans["Bo works at Acme ."] == [("Acme", "eval")]
    assert spans["Ann likes Anna ."] == []


def test_unkeyed_answers_match_whole_words_in_every_passage(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "task.yaml").write_text("type: cloze\ncorpus: c.txt\ntrain: tr.jsonl\neval: ev.jsonl\n", encoding="utf-8")
    (d / "c.txt").write_text("Ann met Anna .\nann and Ann .\nnobody here\n", encoding="utf-8")
    _jsonl(d / "tr.jsonl", [{"question": "[BLANK] met Anna .", "answers": ["Ann"]}])
    _jsonl(d / "ev.jsonl", [{"question": "who ? [BLANK]", "answers": "nobody"}])
    task = get_task(str(d))
    assert task.name == "t"  # defaults to the directory name
    found = [[(p.text[s.start:s.end], s.start, s.split) for s in p.spans] for p in task.corpus]
    assert found == [[("Ann", 0, "train")], [("Ann", 8, "train")], [("nobody", 0, "eval")]]


def _spec(d: Path, **changes) -> None:
    spec = json.loads((d / "task.json").read_text())
    spec.update(changes)
    (d / "task.json").write_text(json.dumps(spec))


def test_missing_spec_and_data_files_are_named(tmp_path, cloze_dir):
    with pytest.raises(DataError, match="holds no task.yaml"):
        get_task(str(tmp_path))
    with pytest.raises(DataError, match="task path not found: .*nothing/here"):
        get_task(str(tmp_path / "nothing" / "here"))
    (cloze_dir / "eval.jsonl").unlink()
    with pytest.raises(DataError, match=f"data file not found: {cloze_dir / 'eval.jsonl'}"):
        get_task(str(cloze_dir))


def test_spec_errors(cloze_dir, cls_dir):
    _spec(cloze_dir, type="regression")
    with pytest.raises(DataError, match="unknown task type 'regression'"):
        get_task(str(cloze_dir))
    _spec(cloze_dir, type="cloze", train=None)
    with pytest.raises(DataError, match="missing key.*train"):
        get_task(str(cloze_dir))
    (cloze_dir / "task.json").write_text('{"type": "cloze",\n "corpus": }')
    with pytest.raises(DataError, match=r"task\.json: line 2: invalid JSON"):
        get_task(str(cloze_dir))
    (cls_dir / "task.yaml").write_text("type: [classification\ncorpus: x\n")
    with pytest.raises(DataError, match=r"task\.yaml: line \d+: invalid YAML"):
        get_task(str(cls_dir))
    with pytest.raises(ConfigError, match="unknown option"):
        get_task(str(cloze_dir), num_entities=3)


def test_row_errors_name_file_and_line(cloze_dir, cls_dir):
    path = cloze_dir / "train.jsonl"
    path.write_text('{"question": "a [BLANK]", "answers": ["x"]}\n\n{"question": "b [BLANK]", "answers": \n')
    with pytest.raises(DataError, match=r"train\.jsonl: line 3: invalid JSON"):
        get_task(str(cloze_dir))
    _jsonl(path, [{"question": "no blank here", "answers": ["x"]}])
    with pytest.raises(DataError, match=r"train\.jsonl: line 1: question must contain \[BLANK\] exactly once"):
        get_task(str(cloze_dir))
    _jsonl(path, [{"question": "[BLANK] and [BLANK]", "answers": ["x"]}])
    with pytest.raises(DataError, match="exactly once"):
        get_task(str(cloze_dir))
    _jsonl(path, [{"question": "a [BLANK]", "answers": ["x"]}, {"question": "b [BLANK]"}])
    with pytest.raises(DataError, match=r"train\.jsonl: line 2: missing field 'answers'"):
        get_task(str(cloze_dir))
    _jsonl(path, [{"question": "q?", "context": "Bo works at Acme.", "answer_start": 3, "answers": ["Acme"]}])
    with pytest.raises(DataError, match=r"train\.jsonl: line 1: answer 'Acme' is not at offset 3"):
        get_task(str(cloze_dir))
    (cls_dir / "train.csv").write_text("text,label\nok,pos\nno label,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv: line 3: missing field 'label'"):
        get_task(str(cls_dir))


def test_empty_corpus_and_empty_splits(cls_dir):
    (cls_dir / "corpus.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus\.txt: the corpus is empty"):
        get_task(str(cls_dir))
    (cls_dir / "corpus.txt").write_text("text\n", encoding="utf-8")
    (cls_dir / "eval.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"eval\.jsonl: file is empty"):
        get_task(str(cls_dir))
