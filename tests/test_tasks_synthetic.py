"""The built-in synthetic world and the task registry."""
from __future__ import annotations

import pytest

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.tasks.base import BLANK, Task
from maskpolicy.tasks.registry import available_tasks, get_task
from maskpolicy.tasks.synthetic import PREFIXES, SUFFIXES, TEMPLATES, VALUES, SyntheticWorldConfig, build_synthetic_task
from maskpolicy.tasks.tokenizer import tokenizer_for_task

RELATIONS = ("birthplace", "profession", "colour", "employer")


def _snapshot(task: Task):
    return ([(p.text, p.spans, p.key) for p in task.corpus], [(q.text, q.answers, q.key) for q in task.train],
            [(q.text, q.answers, q.key) for q in task.eval])


def _facts(task: Task) -> dict[str, tuple[str, str]]:
    """entity -> (value, split) from a single-relation task's questions."""
    out = {q.key: (q.answers[0], "train") for q in task.train}
    out.update({q.key: (q.answers[0], "eval") for q in task.eval})
    return out


def test_default_sizes_and_names():
    task = get_task("synthetic:birthplace")
    assert task.name == "synthetic:birthplace" and task.kind == "cloze"
    assert len(task.corpus) == 200 * 3  # a relation's task: entities x sentences per fact
    assert all(p.spans for p in task.corpus)
    world = get_task("synthetic:birthplace", whole_world_corpus=True)
    assert len(world.corpus) == 200 * 4 * 3  # entities x relations x sentences per fact
    assert {p.text for p in task.corpus} <= {p.text for p in world.corpus}  # same sentences
    assert len(task.train) + len(task.eval) == 200
    assert "200 entities" in task.description
    assert max(len(p.text.split()) for p in task.corpus) <= 20
    everything = get_task("synthetic")
    assert everything.name == "synthetic" and len(everything.train) + len(everything.eval) == 4 * 200
    assert len(everything.corpus) == 200 * 4 * 3
    assert set(RELATIONS) <= set(TEMPLATES) and all(len(t) >= 4 for t in TEMPLATES.values())
    assert all(15 <= len(v) <= 25 for v in VALUES.values())


def test_same_seed_same_world_and_different_seeds_differ():
    a = build_synthetic_task("colour", SyntheticWorldConfig(seed=3, num_entities=30))
    b = build_synthetic_task("colour", SyntheticWorldConfig(seed=3, num_entities=30))
    c = build_synthetic_task("colour", SyntheticWorldConfig(seed=4, num_entities=30))
    assert _snapshot(a) == _snapshot(b)
    assert _snapshot(a) != _snapshot(c)
    assert {q.key for q in a.train} != {q.key for q in c.train}


def test_entity_names_are_invented_unique_capitalised_words():
    task = get_task("synthetic", num_entities=300)
    names = {p.key for p in task.corpus}
    assert len(names) == 300
    reserved = {v.lower() for vs in VALUES.values() for v in vs}
    reserved |= {w.lower() for t in list(PREFIXES) + list(SUFFIXES) for w in t.split()}
    reserved |= {w.lower() for ts in TEMPLATES.values() for t in ts for w in t.split()}
    for name in names:
        assert name.isalpha() and name[0].isupper() and name[1:].islower()
        assert name.lower() not in reserved


def test_train_and_eval_entities_are_disjoint_and_every_fact_is_in_the_corpus():
    config = SyntheticWorldConfig(seed=1, num_entities=40, eval_fraction=0.25, whole_world_corpus=True)
    task = build_synthetic_task("employer", config)
    train_keys, eval_keys = {q.key for q in task.train}, {q.key for q in task.eval}
    assert not train_keys & eval_keys
    assert len(eval_keys) == 10 and len(train_keys) == 30
    per_entity: dict[str, list[str]] = {}
    for p in task.corpus:
        per_entity.setdefault(p.key, []).append(p.text)
    assert set(per_entity) == train_keys | eval_keys  # eval entities' facts are in the corpus too
    for entity, (value, _) in _facts(task).items():
        assert len(per_entity[entity]) == len(RELATIONS) * config.sentences_per_fact
        assert sum(value in text.split() for text in per_entity[entity]) >= config.sentences_per_fact


def test_spans_point_at_the_answer_with_the_entity_split():
    task = build_synthetic_task("birthplace", SyntheticWorldConfig(num_entities=50))
    facts = _facts(task)
    with_spans = [p for p in task.corpus if p.spans]
    assert len(with_spans) == 50 * 3  # only the birthplace sentences carry spans
    for p in with_spans:
        (span,) = p.spans
        value, split = facts[p.key]
        assert p.text[span.start:span.end] == value
        assert span.split == split


def test_all_relations_task_has_spans_in_every_passage():
    task = get_task("synthetic", num_entities=12)
    assert all(len(p.spans) == 1 for p in task.corpus)
    answers = {q.answers[0] for q in task.train + task.eval}
    assert all(p.text[p.spans[0].start:p.spans[0].end] in answers for p in task.corpus)


def test_questions_use_the_first_template_with_one_blank():
    task = get_task("synthetic:profession", num_entities=20)
    for q in task.train + task.eval:
        assert q.text.count(BLANK) == 1
        assert q.text == TEMPLATES["profession"][0].format(e=q.key, v=BLANK)
        assert len(q.answers) == 1 and q.answers[0] in VALUES["profession"]


def test_fillers_move_the_answer_position():
    task = get_task("synthetic:colour", num_entities=40)
    starts = {p.spans[0].start for p in task.corpus if p.spans}
    assert len(starts) > 10
    assert any(p.text.startswith(tuple(x for x in PREFIXES if x)) for p in task.corpus)


def test_names_and_values_are_single_tokens_with_the_default_vocab():
    task = get_task("synthetic")
    tokenizer = tokenizer_for_task(task)
    words = sorted({p.key for p in task.corpus}) + [v for vs in VALUES.values() for v in vs]
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
    assert [w for w, ids in zip(words, pieces) if len(ids) != 1] == []


def test_every_relation_of_one_world_shares_one_tokenizer_and_another_world_does_not():
    vocabs = [tokenizer_for_task(get_task(f"synthetic:{r}", num_entities=30)).get_vocab() for r in RELATIONS]
    vocabs.append(tokenizer_for_task(get_task("synthetic", num_entities=30)).get_vocab())
    vocabs.append(tokenizer_for_task(get_task("synthetic:colour", num_entities=30, whole_world_corpus=True)).get_vocab())
    assert all(v == vocabs[0] for v in vocabs)
    other = tokenizer_for_task(get_task("synthetic:birthplace", num_entities=30, seed=1)).get_vocab()
    assert other != vocabs[0]  # other invented names


@pytest.mark.parametrize("bad, match", [
    (dict(relations=("birthplace", "shoe size")), "unknown relation"),
    (dict(num_entities=3), "num_entities"),
    (dict(sentences_per_fact=0), "sentences_per_fact"),
    (dict(sentences_per_fact=99), "sentences_per_fact"),
    (dict(eval_fraction=1.0), "eval_fraction"),
])
def test_bad_config_is_a_config_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticWorldConfig(**bad)


def test_registry_names_and_errors(monkeypatch):
    names = available_tasks()
    assert {"synthetic", "synthetic:birthplace", "mr", "sst2", "imdb", "yelp", "wikitext2", "squad"} <= set(names)
    with pytest.raises(ConfigError, match="unknown task 'nope'.*synthetic:colour.*path to a task directory"):
        get_task("nope")
    with pytest.raises(ConfigError, match="unknown synthetic relation"):
        get_task("synthetic:shoe")
    with pytest.raises(ConfigError, match="unknown option"):
        get_task("synthetic", colour_count=3)
    assert len(get_task("synthetic:colour", num_entities=8, seed=5).corpus) == 8 * 3

    import maskpolicy.tasks.registry as registry

    monkeypatch.setattr(registry, "build_synthetic_task", lambda relation, config: Task("empty", "cloze", []))
    with pytest.raises(DataError, match="task empty has an empty corpus"):
        get_task("synthetic")
