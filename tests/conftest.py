"""Shared fixtures: a small WordPiece tokenizer and padded batches built from generated text."""
from __future__ import annotations

import random

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from maskpolicy.tasks.tokenizer import build_tokenizer

NAMES = ["Dravik", "Olmeth", "Velmora", "Quorvex", "Tamsin", "Brellow", "Isk", "Ardent"]
WORDS = ("the a of was born in city people say that long ago it is known works as baker sailor "
         "painter red blue teal lived near river house old records show 1987 March 12 400 years").split()


def make_sentences(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        words.insert(rng.randint(1, len(words)), rng.choice(NAMES))  # a capitalised name mid-sentence
        if rng.random() < 0.3:
            words += ["in", "new", "york", "city"]  # a planted collocation
        out.append(" ".join(words) + " .")
    return out


def build_test_tokenizer(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A cased WordPiece tokenizer over ``texts``, the same in every process.

    Built with the library's own vocabulary learner: ``tokenizers``' WordPieceTrainer picks
    its vocabulary in hash-map order, so a tokenizer trained with it differed from one test
    process to the next and so did every model built on it (a finite-difference check
    failed in a full run for that reason, and passed in the next). Small vocabulary on
    purpose: some names split into "##" pieces (tests word integrity).
    """
    return build_tokenizer(texts, vocab_size=vocab_size, lowercase=False)


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return make_sentences()


@pytest.fixture(scope="session")
def tokenizer(sentences):
    return build_test_tokenizer(sentences)


def padded_batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, word_ids (-1 at special/padding), span_ids (-1: no spans)."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    word_ids = torch.tensor([[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(texts))])
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "word_ids": word_ids}


@pytest.fixture()
def batch(tokenizer, sentences):
    return padded_batch(tokenizer, sentences[:32])


@pytest.fixture(scope="session")
def small_synthetic_task():
    """synthetic:birthplace with 40 entities (fast), shared by task and learning tests."""
    from maskpolicy.tasks.registry import get_task

    return get_task("synthetic:birthplace", num_entities=40)


@pytest.fixture(scope="session")
def small_synthetic_tokenizer(small_synthetic_task):
    from maskpolicy.tasks.tokenizer import tokenizer_for_task

    return tokenizer_for_task(small_synthetic_task)


@pytest.fixture()
def cls_dir(tmp_path):
    """A classification task directory (task.yaml, corpus.txt, train.csv, eval.jsonl)."""
    import json

    d = tmp_path / "sentiment"
    d.mkdir()
    (d / "task.yaml").write_text("name: my-sentiment\ntype: classification\ncorpus: corpus.txt\n"
                                 "train: train.csv\neval: eval.jsonl\n", encoding="utf-8")
    (d / "corpus.txt").write_text("a good film .\n\nthe food was cold .\n", encoding="utf-8")
    (d / "train.csv").write_text('text,label\n"great, really",pos\nawful,neg\nfine,meh\n', encoding="utf-8")
    rows = [{"text": "super", "label": "pos"}, {"text": "bad", "label": "neg"}]
    (d / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return d


@pytest.fixture()
def unwritable_dir(tmp_path):
    """A directory where no file can be created, also for root (who ignores permission bits)."""
    import os

    if os.geteuid() == 0:
        yield "/proc"  # procfs refuses new entries to everyone
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    yield str(locked)
    locked.chmod(0o755)


def _toy_examples(n: int, rng) -> list:
    """Sentences of 6 filler words plus one sentiment word; the label says which kind."""
    from maskpolicy.tasks.base import LabeledText

    filler = [f"w{i}" for i in range(40)]
    positive, negative = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]
    out = []
    for _ in range(n):
        label = rng.random() < 0.5
        words = rng.sample(filler, 6)
        words.insert(rng.randrange(7), rng.choice(positive if label else negative))
        out.append(LabeledText(" ".join(words), int(label)))
    return out


@pytest.fixture(scope="session")
def toy_classification():
    """(task, tokenizer): a two-class task decided by one keyword per sentence (400 train,
    200 eval), learnable by a tiny model in seconds."""
    from maskpolicy.tasks.base import Passage, Task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task

    rng = random.Random(0)
    train, evaluation = _toy_examples(400, rng), _toy_examples(200, rng)
    task = Task("toy", "classification", corpus=[Passage(e.text) for e in train], train=train, eval=evaluation,
                label_names=["neg", "pos"])
    return task, tokenizer_for_task(task, vocab_size=200)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, toy_classification):
    """A randomly initialised tiny BertForMaskedLM saved with the toy task's tokenizer."""
    from accelerate.utils import set_seed

    from maskpolicy.train.models import preset_model

    _, tok = toy_classification
    set_seed(0)
    directory = tmp_path_factory.mktemp("tiny-lm")
    preset_model("tiny", len(tok), 64).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)
