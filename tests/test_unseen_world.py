"""A world the library has never seen (benchmarks/unseen_world.py), loaded as a custom task
from files: multi-word answers, a distractor relation, and meta-learning on it."""
from __future__ import annotations

import pytest

from maskpolicy.benchmarks.unseen_world import PORTS, write_unseen_world
from maskpolicy.meta.learn import LearnConfig, learn
from maskpolicy.policies.errors import ConfigError
from maskpolicy.tasks.registry import get_task
from maskpolicy.tasks.tokenizer import tokenizer_for_task


@pytest.fixture(scope="module")
def harbour(tmp_path_factory):
    return write_unseen_world(str(tmp_path_factory.mktemp("harbour")), num_ships=24)


def test_it_loads_as_a_files_task_with_multi_token_answers_and_a_distractor(harbour):
    task = get_task(harbour)
    assert task.name == "harbour" and task.kind == "cloze"
    assert len(task.corpus) == 24 * 2 * 3 and len(task.train) == len(task.eval) == 12
    with_spans = [p for p in task.corpus if p.spans]
    assert len(with_spans) == 24 * 3  # gold spans in the home-port sentences only
    for p in with_spans:
        assert p.text[p.spans[0].start:p.spans[0].end] in PORTS
    tokenizer = tokenizer_for_task(task)
    lengths = [len(tokenizer(q.answers[0], add_special_tokens=False)["input_ids"]) for q in task.eval]
    assert max(lengths) >= 2  # multi-token answers
    assert get_task(harbour).corpus[0].text == task.corpus[0].text  # deterministic


def test_same_seed_same_files(tmp_path):
    a = write_unseen_world(str(tmp_path / "a"), num_ships=8, seed=3)
    b = write_unseen_world(str(tmp_path / "b"), num_ships=8, seed=3)
    assert (tmp_path / "a" / "corpus.jsonl").read_text() == (tmp_path / "b" / "corpus.jsonl").read_text()
    assert a != b
    with pytest.raises(ConfigError, match="num_ships"):
        write_unseen_world(str(tmp_path / "c"), num_ships=2)


def test_meta_learning_finds_the_asked_relation_in_an_unseen_world(harbour, tmp_path):
    report = learn(LearnConfig(task=harbour, method="meta", out=str(tmp_path / "pol"), lm_warmup_steps=20,
                               max_length=32, progress=False, validate={"enabled": False},
                               meta={"meta_steps": 60, "eval_every": 60, "outer_batch": 8}))
    held = report["held_out"]
    assert report["skipped_steps"] == 0
    assert held["recall"] > held["random_recall"] + 0.2  # from the downstream loss alone
