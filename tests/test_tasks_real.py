"""Real data loaders: on small generated files in each format, and on ../shared/data when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from maskpolicy.policies.errors import DataError
from maskpolicy.tasks.base import BLANK
from maskpolicy.tasks.real import DATA_DIR_ENV, REAL_TASKS, load_real_task
from maskpolicy.tasks.registry import get_task

from realdata import _write, write_mini_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"



@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """A miniature copy of the shared/data layout, generated."""
    return write_mini_data(tmp_path / "data")


def test_mr_reads_latin1_labels_and_splits_90_10(data_dir):
    task = load_real_task("mr", str(data_dir), seed=0)
    assert task.kind == "classification" and task.label_names == ["negative", "positive"]
    assert len(task.train) == 36 and len(task.eval) == 4
    assert all(("café" in ex.text) == (ex.label == 1) for ex in task.train + task.eval)
    assert task.corpus and any("food line" in p.text for p in task.corpus)  # IMDB + Yelp corpus
    again, other = load_real_task("mr", str(data_dir), seed=0), load_real_task("mr", str(data_dir), seed=1)
    assert [e.text for e in again.eval] == [e.text for e in task.eval]
    assert [e.text for e in other.eval] != [e.text for e in task.eval]
    capped = load_real_task("mr", str(data_dir), max_corpus_passages=5)
    assert len(capped.corpus) == 5


def test_sst2_train_and_dev(data_dir):
    task = get_task("sst2", data_dir=str(data_dir))
    assert [(e.text, e.label) for e in task.train] == [("a stirring , funny film", 1), ("a dull mess", 0),
                                                        ("great fun", 1)]
    assert [e.label for e in task.eval] == [0, 1]


def test_imdb_passages_are_short_clean_and_is_valid_rows_are_held_out(data_dir):
    task = load_real_task("imdb", str(data_dir), max_words=20)
    assert task.kind == "corpus"
    assert all(len(p.text.split()) <= 20 and "<br" not in p.text for p in task.corpus + task.eval_corpus)
    assert len([p for p in task.corpus if "Sentence" in p.text]) > 5  # the long review was cut up
    assert [p.text for p in task.eval_corpus] == ["Loved it. Would watch again."]


def test_yelp_and_wikitext2(data_dir):
    yelp = load_real_task("yelp", str(data_dir))
    assert len(yelp.corpus) + len(yelp.eval_corpus) == 40 and len(yelp.eval_corpus) == 2
    wiki = load_real_task("wikitext2", str(data_dir))
    assert [p.text for p in wiki.corpus] == ["The lobster is blue . It lives in the sea .", "The lobster eats fish ."]
    assert [p.text for p in wiki.eval_corpus] == ["The crab walks sideways ."]


def test_squad_answer_cloze(data_dir):
    task = load_real_task("squad", str(data_dir), seed=0)
    assert task.kind == "cloze"
    texts = [p.text for p in task.corpus]
    # "Dr. Smith" does not end a sentence; every passage is one sentence of the paragraph.
    assert texts == ["The lobster lives in the Atlantic Ocean.", "It was described by Dr. Smith in 1758.",
                     "Lobsters are blue until cooked."]
    assert all(p.key == "Lobsters/0" for p in task.corpus)
    questions = task.train + task.eval
    assert len(questions) == 3 and len(task.train) == 2 and len(task.eval) == 1  # q3 duplicates q1; q5 skipped
    by_answer = {q.answers[0]: q for q in questions}
    assert by_answer["Atlantic Ocean"].text == f"The lobster lives in the {BLANK}."
    assert by_answer["Atlantic Ocean"].answers == ["Atlantic Ocean", "the Atlantic Ocean", "Atlantic"]
    assert by_answer["Dr. Smith"].text == f"It was described by {BLANK} in 1758."
    split_of = {q.answers[0]: split for split, qs in (("train", task.train), ("eval", task.eval)) for q in qs}
    spans = [(p.text[s.start:s.end], s.split) for p in task.corpus for s in p.spans]
    assert sorted(spans) == sorted((a, split_of[a]) for a in split_of)
    other = load_real_task("squad", str(data_dir), seed=3)
    assert sorted(q.text for q in other.train + other.eval) == sorted(q.text for q in questions)


def test_data_dir_from_environment_and_missing_everywhere(data_dir, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError, match=f"--data-dir.*{DATA_DIR_ENV}"):
        get_task("yelp")
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert get_task("yelp").corpus
    with pytest.raises(DataError, match="data directory not found"):
        get_task("yelp", data_dir=str(data_dir / "nowhere"))


def test_missing_files_are_named(data_dir):
    os.remove(data_dir / "mr/rt-polarity.neg")
    with pytest.raises(DataError, match=r"rt-polarity\.neg.*Latin-1"):
        load_real_task("mr", str(data_dir))
    os.remove(data_dir / "yelp/sentiment.test.1")
    with pytest.raises(DataError, match=r"yelp/sentiment\.test\.1"):
        load_real_task("sst2", str(data_dir))  # the in-domain corpus needs Yelp


def test_empty_and_malformed_files_name_file_and_line(data_dir):
    _write(data_dir / "sst2/stsa.binary.dev", "1 fine\nthree bad line\n")
    with pytest.raises(DataError, match=r"stsa\.binary\.dev: line 2"):
        load_real_task("sst2", str(data_dir))
    _write(data_dir / "wikitext2/test.txt", "\n \n")
    with pytest.raises(DataError, match=r"test\.txt: file is empty"):
        load_real_task("wikitext2", str(data_dir))
    _write(data_dir / "squad_subset/dev-subset-v2.0.json", '{"data": [\n  {"title": }\n]}')
    with pytest.raises(DataError, match=r"dev-subset-v2\.0\.json: line 2"):
        load_real_task("squad", str(data_dir))


# ---------------------------------------------------------------- the real shared data
@pytest.fixture(scope="module")
def shared() -> str:
    if not (SHARED / "SOURCES.md").is_file():
        pytest.skip(f"shared data not found at {SHARED}")
    return str(SHARED)


def test_shared_classification_sets(shared):
    mr = load_real_task("mr", shared, max_corpus_passages=500)
    assert len(mr.train) + len(mr.eval) == 10662 and len(mr.corpus) == 500
    assert {e.label for e in mr.train} == {0, 1}
    sst2 = load_real_task("sst2", shared, max_corpus_passages=100)
    assert (len(sst2.train), len(sst2.eval)) == (6920, 872)


def test_shared_corpora(shared):
    for name in ("imdb", "yelp", "wikitext2"):
        task = load_real_task(name, shared)
        assert task.kind == "corpus" and len(task.corpus) > 1000 and task.eval_corpus
        assert max(len(p.text.split()) for p in task.corpus) <= 60
    wiki = load_real_task("wikitext2", shared)
    assert not any(p.text.startswith("= ") for p in wiki.corpus)


def test_shared_squad_spans_match_answers(shared):
    task = load_real_task("squad", shared)
    assert len(task.train) > 200 and abs(len(task.train) - len(task.eval)) <= 1
    assert all(q.text.count(BLANK) == 1 for q in task.train + task.eval)
    answers = {a for q in task.train + task.eval for a in q.answers[:1]}
    spans = [p.text[s.start:s.end] for p in task.corpus for s in p.spans]
    assert len(spans) == len(task.train) + len(task.eval)
    assert set(spans) <= answers
    assert set(REAL_TASKS) == {"mr", "sst2", "imdb", "yelp", "wikitext2", "squad"}


def test_sentence_split_and_chunking_helpers():
    from maskpolicy.tasks.text import chunk_passages, cloze_from_context, split_sentences

    text = 'He served in the U.S. Army. Then he left! "Why?" she asked. Mr. Smith met Dr. Who in 1999. It ended.'
    assert split_sentences(text) == ["He served in the U.S. Army.", "Then he left!", '"Why?" she asked.',
                                     "Mr. Smith met Dr. Who in 1999.", "It ended."]
    chunks = chunk_passages("one two three. Four five six seven eight nine ten. Eleven.", max_words=4)
    assert chunks == ["one two three.", "Four five six seven", "eight nine ten. Eleven."]
    cloze = cloze_from_context(text, text.index("1999"), "1999")
    assert cloze.text == f"Mr. Smith met Dr. Who in {BLANK}." and cloze.sentence[cloze.start:cloze.end] == "1999"
    with pytest.raises(ValueError, match="not at offset"):
        cloze_from_context(text, 0, "Army")
