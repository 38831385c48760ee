"""Gold spans of cloze tasks from files: counted, warned about, refused when absent, recorded, shown."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from maskpolicy.cli import main
from maskpolicy.policies import get_policy
from maskpolicy.policies.display import policy_view
from maskpolicy.policies.errors import DataError
from maskpolicy.tasks.files import GOLD_SPAN_RULE, load_task_from_files

CORPUS = [
    {"text": "Dravik was born in Velmora long ago .", "key": "dravik"},
    {"text": "people say Tamsin grew up in Brellow .", "key": "tamsin"},
    {"text": "Olmeth works at Quorvex Mills in the north .", "key": "olmeth"},
    {"text": "Isk lives near the river in Ardent .", "key": "isk"},
]
QUESTIONS = {  # split -> (question, answer, passage key)
    "train": [("Dravik was born in [BLANK] .", "Velmora", "dravik"),
              ("Tamsin grew up in [BLANK] .", "Brellow", "tamsin"),
              ("Olmeth works at [BLANK] .", "Quorvex Mills", "olmeth")],
    "eval": [("Isk lives in [BLANK] .", "Ardent", "isk")],
}
TINY_RUN = ["--policy", "salient_span", "--model", "tiny", "--steps", "2", "--batch-size", "4", "--max-length", "32",
            "--vocab-size", "200", "--no-evaluate", "--eval-every", "0", "--save-every", "0", "--quiet", "--cpu"]


def _jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_task(root: Path, question_keys: dict[str, str] | None = None) -> Path:
    """The task dir; ``question_keys`` maps a passage key to the key its question uses instead."""
    question_keys = question_keys or {}
    d = root / "acme"
    d.mkdir()
    (d / "task.yaml").write_text("name: acme\ntype: cloze\ncorpus: corpus.jsonl\ntrain: train.jsonl\n"
                                 "eval: eval.jsonl\n", encoding="utf-8")
    _jsonl(d / "corpus.jsonl", CORPUS)
    for split, rows in QUESTIONS.items():
        _jsonl(d / f"{split}.jsonl", [{"question": q, "answers": [a], "key": question_keys.get(k, k)}
                                      for q, a, k in rows])
    return d


def load_recording(path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = load_task_from_files(str(path))
    return task, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_keys_differing_in_case_give_one_warning_with_counts_and_the_cause(tmp_path):
    task, messages = load_recording(write_task(tmp_path, {"dravik": "Dravik", "tamsin": "Tamsin",
                                                          "olmeth": "Olmeth", "isk": "ISK"}))
    assert len(messages) == 1
    (message,) = messages
    assert message.startswith("task 'acme': 3 of 3 train and 1 of 1 eval questions have no gold span")
    assert GOLD_SPAN_RULE in message
    assert "4 would match with keys compared case-insensitively" in message
    assert "question key 'Dravik', passage key 'dravik'" in message
    assert not task.has_spans
    report = task.gold_span_report
    assert report["train"] == {"questions": 3, "without_span": 3, "key_case": 3, "other_key": 0}
    assert report["eval"] == {"questions": 1, "without_span": 1, "key_case": 1, "other_key": 0}
    assert report["rule"] == GOLD_SPAN_RULE
    assert json.loads(json.dumps(report)) == report  # recorded as it is


def test_an_answer_only_under_another_key_is_named_as_the_cause(tmp_path):
    task, (message,) = load_recording(write_task(tmp_path, {"tamsin": "isk"}))
    assert "1 of 3 train and 0 of 1 eval questions have no gold span" in message
    assert "1 would match without the key restriction" in message and "case-insensitively" not in message
    assert task.gold_span_report["train"]["other_key"] == 1


def test_matching_keys_find_every_span_without_a_warning(tmp_path):
    task, messages = load_recording(write_task(tmp_path))
    assert messages == []
    spans = {p.key: [(p.text[s.start:s.end], s.split) for s in p.spans] for p in task.corpus}
    assert spans == {"dravik": [("Velmora", "train")], "tamsin": [("Brellow", "train")],
                     "olmeth": [("Quorvex Mills", "train")], "isk": [("Ardent", "eval")]}
    assert task.gold_span_report["train"]["without_span"] == 0 and task.gold_span_report["eval"]["without_span"] == 0


def test_pretrain_refuses_the_oracle_without_any_gold_span_before_training(tmp_path, capsys, monkeypatch):
    import maskpolicy.train.objectives as objectives

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built: the check must come before training")

    monkeypatch.setattr(objectives, "preset_model", no_model)
    task_dir = write_task(tmp_path, {"dravik": "Dravik", "tamsin": "Tamsin", "olmeth": "Olmeth", "isk": "Isk"})
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="have no gold span"):
        code = main(["pretrain", "--task", str(task_dir), "--out", str(out)] + TINY_RUN)
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("maskpolicy: error: task 'acme': no corpus passage has a gold span")
    assert GOLD_SPAN_RULE in lines[0] and "would match with keys compared case-insensitively" in lines[0]
    assert not (out / "results.json").exists() and not (out / "checkpoints").exists()


def test_the_check_leaves_the_heuristic_and_other_policies_alone(tmp_path):
    from maskpolicy.tasks.tokenizer import tokenizer_for_task
    from maskpolicy.train.data import check_gold_spans, corpus_dataset

    task, _ = load_recording(write_task(tmp_path, {"dravik": "Dravik", "tamsin": "Tamsin", "olmeth": "Olmeth",
                                                   "isk": "Isk"}))
    tokenizer = tokenizer_for_task(task, vocab_size=200)
    data = corpus_dataset(tokenizer, task, 32)
    with pytest.raises(DataError, match="use_gold_spans=false"):
        check_gold_spans(task, get_policy("salient_span", tokenizer), data)
    check_gold_spans(task, get_policy("salient_span", tokenizer, use_gold_spans=False), data)
    check_gold_spans(task, get_policy("span", tokenizer), data)


def test_partly_found_spans_are_recorded_with_the_fallback_rows(tmp_path):
    task_dir = write_task(tmp_path, {"tamsin": "Tamsin", "isk": "Isk"})
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="1 of 3 train and 1 of 1 eval questions"):
        assert main(["pretrain", "--task", str(task_dir), "--out", str(out)] + TINY_RUN) == 0
    expected = {"rows": 4, "rows_with_gold": 2, "fallback_rows": 2, "fallback": "capitalised-word heuristic",
                "questions": {"train": 3, "eval": 1}, "questions_without_span": {"train": 1, "eval": 1}}
    results = json.loads((out / "results.json").read_text())
    assert results["policy"]["name"] == "salient_span" and results["policy"]["use_gold_spans"] is True
    assert results["policy"]["gold_spans"] == expected
    run_info = json.loads((out / "model" / "maskpolicy_run.json").read_text())
    assert run_info["policy"]["gold_spans"] == expected


def test_synthetic_tasks_have_no_fallback_rows():
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task
    from maskpolicy.train.data import corpus_dataset, policy_run_info

    task = get_task("synthetic:birthplace", num_entities=12)
    tokenizer = tokenizer_for_task(task, vocab_size=300)
    data = corpus_dataset(tokenizer, task, 32)
    info = policy_run_info(get_policy("salient_span", tokenizer), task, data)
    assert info["gold_spans"] == {"rows": len(task.corpus), "rows_with_gold": len(task.corpus), "fallback_rows": 0,
                                  "fallback": "capitalised-word heuristic"}
    assert "gold_spans" not in policy_run_info(get_policy("random", tokenizer), task, data)


def test_show_passages_marks_gold_span_tokens(tmp_path, capsys):
    task_dir = write_task(tmp_path, {"tamsin": "Tamsin"})
    with pytest.warns(UserWarning):
        code = main(["show", "--task", str(task_dir), "--policy", "salient_span", "--passages", "2",
                     "--vocab-size", "200"])
    out = capsys.readouterr().out
    assert code == 0
    assert "the first 2 of 4 corpus passages" in out
    assert "passage 1, key 'dravik': gold spans 'Velmora' (train)" in out
    assert "passage 2, key 'tamsin': no gold span: salient_span falls back to its capitalised-word heuristic" in out
    gold_tokens = [m.group(1) for m in re.finditer(r"^[* ] g (\S+)", out, re.M)]
    assert gold_tokens == ["Velmora"]
    assert re.search(r"^[* ] g Velmora +1\.000 #+$", out, re.M)  # the oracle masks it with probability 1
    assert "1 in gold spans" in out and "0 in gold spans" in out
    assert "passage 3" not in out


def test_show_text_still_works_and_passages_need_a_task(tmp_path, capsys):
    task_dir = write_task(tmp_path)
    assert main(["show", "--task", str(task_dir), "--policy", "salient_span", "--vocab-size", "200",
                 "--text", "Dravik was born in Velmora ."]) == 0
    out = capsys.readouterr().out
    assert "tokens masked" in out and "gold" not in out
    assert main(["show", "--policy", "salient_span", "--passages", "2"]) == 2
    assert "needs --task T and --policy P" in capsys.readouterr().err


def test_policy_view_refuses_extras_of_another_length(tmp_path):
    task, _ = load_recording(write_task(tmp_path))
    from maskpolicy.tasks.tokenizer import tokenizer_for_task

    tokenizer = tokenizer_for_task(task, vocab_size=200)
    with pytest.raises(DataError, match="entries for the"):
        policy_view(get_policy("salient_span", tokenizer), tokenizer, "Dravik was born in Velmora .",
                    extras={"span_ids": [-1, 0]})
