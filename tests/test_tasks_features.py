"""Tokenised datasets (tasks/features.py) and tokenizers (tasks/tokenizer.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from maskpolicy.policies.errors import DataError
from maskpolicy.tasks.base import BLANK, ClozeQuestion, LabeledText, Passage, Span
from maskpolicy.tasks.features import cloze_exact_match, encode_cloze, encode_labeled, encode_passages
from maskpolicy.tasks.tokenizer import build_tokenizer, load_vocab_tokenizer

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ROOT.parent / "shared" / "data" / "vocab" / "bert_base_uncased_vocab.txt"
TEXTS = ["Dravik was born in Velmora long ago .", "the birthplace of Olmeth is Quorvex Harbour .",
         "people say Tamsin grew up in Velmora .", "it is said that Olmeth works as a baker ."] * 5


@pytest.fixture(scope="module")
def task(small_synthetic_task):
    return small_synthetic_task


@pytest.fixture(scope="module")
def tok(small_synthetic_tokenizer):
    return small_synthetic_tokenizer


@pytest.fixture(scope="module")
def small_tok():
    """A tiny vocabulary, so names split into several "##" pieces."""
    return build_tokenizer(TEXTS, vocab_size=100)


def test_encode_passages_columns_and_spans(task, tok):
    data = encode_passages(tok, task.corpus, max_length=48)
    assert data.column_names == ["input_ids", "word_ids", "span_ids", "key"] and len(data) == len(task.corpus)
    for row, passage in zip(data, task.corpus):
        ids, words, spans = row["input_ids"], row["word_ids"], row["span_ids"]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.pad_token_id not in ids
        assert len(ids) == len(words) == len(spans) and words[0] == words[-1] == -1
        assert row["key"] == passage.key
        marked = [t for t, s in zip(ids, spans) if s >= 0]
        if passage.spans:  # exactly the answer's tokens carry span 0
            span = passage.spans[0]
            assert marked == tok(passage.text[span.start:span.end], add_special_tokens=False)["input_ids"]
        else:
            assert marked == []
    train_only = encode_passages(tok, task.corpus, max_length=48, span_splits=("train",))
    for row, passage in zip(train_only, task.corpus):
        assert (max(row["span_ids"]) >= 0) == any(s.split == "train" for s in passage.spans)


def test_multi_piece_spans_and_second_span_index(small_tok):
    text = "Dravik was born in Velmora long ago ."
    passage = Passage(text, [Span(0, 6), Span(19, 26, "eval")], key=None)
    row = encode_passages(small_tok, [passage])[0]
    pieces = small_tok(text)["input_ids"]
    assert row["input_ids"] == pieces and row["key"] == ""
    n_dravik = len(small_tok("Dravik", add_special_tokens=False)["input_ids"])
    n_velmora = len(small_tok("Velmora", add_special_tokens=False)["input_ids"])
    assert n_dravik > 1  # the tiny vocabulary splits names
    assert row["span_ids"].count(0) == n_dravik and row["span_ids"].count(1) == n_velmora
    assert len(set(w for w, s in zip(row["word_ids"], row["span_ids"]) if s == 0)) == 1  # one word


def test_truncation_warns_once_with_the_count(tok, task):
    with pytest.warns(UserWarning, match=r"\d+ of 2 passages .* truncated") as record:
        data = encode_passages(tok, task.corpus[:2], max_length=6)
    assert len(record) == 1 and all(len(ids) == 6 for ids in data["input_ids"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing too long: no warning
        encode_passages(tok, task.corpus[:2], max_length=64)
    with pytest.raises(DataError, match="empty"):
        encode_passages(tok, [])


def test_cloze_answer_ids_sit_exactly_under_the_masks(small_tok):
    questions = [ClozeQuestion(f"Dravik was born in {BLANK} long ago .", ["Tamsin Velmora"], key="dravik"),
                 ClozeQuestion(f"{BLANK} was born in Velmora .", ["Quorvex Harbour"])]
    data = encode_cloze(small_tok, questions)
    assert data.column_names == ["input_ids", "labels", "key"] and data["key"] == ["dravik", ""]
    for row, q in zip(data, questions):
        answer = small_tok(q.answers[0], add_special_tokens=False)["input_ids"]
        ids, labels = row["input_ids"], row["labels"]
        at = [i for i, t in enumerate(ids) if t == small_tok.mask_token_id]
        assert len(at) == len(answer) > 1 and at == list(range(at[0], at[0] + len(answer)))
        assert [labels[i] for i in at] == answer
        assert all(lab == -100 for i, lab in enumerate(labels) if i not in at)
        assert ids[0] == small_tok.cls_token_id and ids[-1] == small_tok.sep_token_id


def test_cloze_truncation(tok):
    long_tail = " ".join(["long ago"] * 40)
    early = ClozeQuestion(f"Dravik was born in {BLANK} {long_tail} .", ["Velmora"])
    with pytest.warns(UserWarning, match="truncated"):
        row = encode_cloze(tok, [early], max_length=16)[0]
    assert len(row["input_ids"]) == 16 and row["labels"].count(-100) == 15
    # A blank beyond max_length: the question is cut to a window centred on the blank.
    late = ClozeQuestion(f"Dravik {long_tail} was born in {BLANK} and grew up there {long_tail} .", ["Velmora"])
    with pytest.warns(UserWarning, match="truncated"):
        row = encode_cloze(tok, [late], max_length=16)[0]
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == 16 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    at = [i for i, lab in enumerate(labels) if lab != -100]
    assert [ids[i] for i in at] == [tok.mask_token_id] * len(at) and 5 <= at[0] <= 9  # near the middle
    assert tok.decode([labels[i] for i in at]).replace(" ", "") == "Velmora"
    assert "born in" in tok.decode(ids[1:at[0]])
    with pytest.raises(DataError, match="does not fit in max_length=4"):
        encode_cloze(tok, [ClozeQuestion(f"x {BLANK} y", ["Velmora Velmora Velmora"])], max_length=4)
    with pytest.raises(DataError, match="exactly once"):
        encode_cloze(tok, [ClozeQuestion("no blank", ["x"])])


def test_encode_labeled(tok):
    examples = [LabeledText("Dravik was born in Velmora .", 1), LabeledText(" ".join(["long ago"] * 40), 0)]
    with pytest.warns(UserWarning, match="1 of 2 examples .* truncated"):
        data = encode_labeled(tok, examples, max_length=12)
    assert data["labels"] == [1, 0] and data["input_ids"][0] == tok(examples[0].text)["input_ids"]
    assert len(data["input_ids"][1]) == 12 and data["input_ids"][1][-1] == tok.sep_token_id
    with pytest.raises(DataError):
        encode_labeled(tok, [])


def test_cloze_exact_match():
    labels = torch.tensor([[-100, 5, 6, -100], [-100, 7, -100, -100], [-100, -100, -100, -100]])
    preds = torch.tensor([[9, 5, 6, 9], [9, 8, 9, 9], [1, 1, 1, 1]])
    assert cloze_exact_match(preds, labels).tolist() == [True, False, False]


def test_tokenizer_specials_save_and_load_round_trip(tok, task, tmp_path):
    assert tok.pad_token_id == 0 and tok.convert_ids_to_tokens(list(range(5))) == \
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.model_max_length == 512
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [p.text for p in task.corpus] + ["Dravik [MASK] was born ."]
    assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
    assert loaded.mask_token_id == tok.mask_token_id and loaded.pad_token_id == 0
    assert tok.decode(tok("Dravik was born in", add_special_tokens=False)["input_ids"]) == "Dravik was born in"


def test_tokenizer_is_deterministic_within_and_across_processes(small_tok):
    """The vocabulary must not depend on hash order (it did with tokenizers' WordPieceTrainer)."""
    texts = TEXTS + [f"{w} {w[::-1]} ab ba" for w in ("Brellow", "Isk", "Ardent", "Olmeth")]  # many count ties
    first = build_tokenizer(texts, vocab_size=120).get_vocab()
    assert all(build_tokenizer(texts, vocab_size=120).get_vocab() == first for _ in range(3))
    code = ("import sys, json; from maskpolicy.tasks.tokenizer import build_tokenizer; "
            f"print(json.dumps(build_tokenizer({texts!r}, vocab_size=120).get_vocab()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert json.loads(out) == first


def test_lowercase_and_min_frequency():
    lower = build_tokenizer(TEXTS, vocab_size=200, lowercase=True)
    assert lower("DRAVIK")["input_ids"] == lower("dravik")["input_ids"]
    rare = build_tokenizer(TEXTS + ["Zyx"], vocab_size=500, min_frequency=3)
    assert len(rare("Zyx", add_special_tokens=False)["input_ids"]) > 1  # seen once: not merged


def test_load_vocab_tokenizer(tmp_path):
    with pytest.raises(DataError, match="vocabulary file not found: .*missing.txt"):
        load_vocab_tokenizer(str(tmp_path / "missing.txt"))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s"]) + "\n")
    t = load_vocab_tokenizer(str(vocab))
    assert t("Hello Worlds [MASK]")["input_ids"] == [2, 5, 6, 7, 4, 3]
    if VOCAB.is_file():
        bert = load_vocab_tokenizer(str(VOCAB))
        assert len(bert) == 30522 and bert("hello world")["input_ids"] == [101, 7592, 2088, 102]
