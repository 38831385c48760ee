"""Selective-masking importance labels: the buffer rule on a classifier with a known rule,
and one real run (tiny BERT fine-tuned on a toy sentiment set, then a policy learnt)."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from maskpolicy.meta import supervised
from maskpolicy.meta.selective import STOP_WORDS, ClassifierConfig, SelectiveConfig, fit_classifier, importance_labels
from maskpolicy.meta.supervised import SupervisedConfig, learn_supervised
from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.tasks.base import LabeledText, Passage, Task
from maskpolicy.tasks.tokenizer import build_tokenizer

TEXTS = ["the movie was great .", "the plot was awful", "a great movie", "great great film",
         "it was very nice", "the movie was great , the cast was fine"]


class RuleClassifier(nn.Module):
    """P(positive) = sigmoid(4 * (#trigger words present - #"awful" present)): "great" and
    the stop word "very" are triggers; anything else leaves the classifier at 0.5."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.triggers = [tokenizer.convert_tokens_to_ids(w) for w in ("great", "very")]
        self.awful = tokenizer.convert_tokens_to_ids("awful")
        self.scale = nn.Parameter(torch.tensor(4.0))  # a parameter, so that it has a device

    def forward(self, input_ids, attention_mask=None):
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        hit = lambda ids: (torch.isin(input_ids, torch.tensor(ids)) & real).any(1).float()  # noqa: E731
        z = self.scale * (hit(self.triggers) - hit([self.awful]))  # [B]
        return SimpleNamespace(logits=torch.stack([-z / 2, z / 2], dim=-1))  # [B, 2]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TEXTS + ["film cast fine nice plot"], vocab_size=200)


def important_words(tok, row) -> list[str]:
    return [t for t, y in zip(tok.convert_ids_to_tokens(row["input_ids"]), row["token_labels"]) if y == 1]


def test_buffer_rule_on_a_known_classifier(tok):
    examples = [LabeledText("the movie was great .", 1), LabeledText("the plot was awful", 0),
                LabeledText("a great movie", 0),  # the classifier says positive: dropped
                LabeledText("great great film", 1), LabeledText("it was very nice", 1)]
    clf = RuleClassifier(tok).train()
    data = importance_labels(clf, tok, examples, SelectiveConfig())
    assert clf.training  # the caller's mode is restored
    assert set(data.column_names) >= {"input_ids", "word_ids", "token_labels"}
    assert data["label"] == [1, 0, 1, 1]  # "a great movie" (label 0) is misclassified and dropped
    rows = list(data)
    assert important_words(tok, rows[0]) == ["great"]  # "movie": S = 0.98 - 0.5, appended
    assert important_words(tok, rows[1]) == ["awful"]
    assert important_words(tok, rows[2]) == ["great", "great"]  # the first is never appended
    # "very" is a stop word: never important, but appended, so "nice" then completes the evidence.
    assert important_words(tok, rows[3]) == ["nice"]
    for row in rows:
        assert row["token_labels"][0] == -100 and row["token_labels"][-1] == -100  # [CLS], [SEP]
        words = tok.convert_ids_to_tokens(row["input_ids"])
        assert all(y == 0 for w, y in zip(words, row["token_labels"]) if w in STOP_WORDS or w in ".,")


def test_delta_controls_how_much_is_important(tok):
    examples = [LabeledText("the movie was great , the cast was fine", 1)]
    clf = RuleClassifier(tok)
    default = important_words(tok, importance_labels(clf, tok, examples)[0])
    assert default == ["great"]  # other content words leave P(y) at 0.5: S = 0.48 >= delta
    loose = important_words(tok, importance_labels(clf, tok, examples, SelectiveConfig(delta=0.6))[0])
    assert loose == ["movie", "great", "cast", "fine"]  # S = 0.48 < 0.6: every content word
    strict = importance_labels(clf, tok, examples, SelectiveConfig(delta=-0.5))[0]
    assert 1 not in strict["token_labels"]  # S >= -0.02 here: nothing is important


def test_selective_config_and_errors(tok):
    assert SelectiveConfig(stop_words=["The", "A"]).stop_words == frozenset({"the", "a"})
    with pytest.raises(ConfigError):
        SelectiveConfig(batch_size=0)
    with pytest.raises(ConfigError):
        SelectiveConfig(delta=float("nan"))
    clf = RuleClassifier(tok)
    with pytest.raises(DataError, match="none of the 1 examples"):
        importance_labels(clf, tok, [LabeledText("a great movie", 0)])
    capped = importance_labels(clf, tok, [LabeledText(t, 1) for t in ("great film", "very nice", "great")],
                               SelectiveConfig(max_examples=2, batch_size=1))
    assert len(capped) == 2


def toy_sentiment(n: int, seed: int) -> list[LabeledText]:
    rng = random.Random(seed)
    good, bad = ["good", "great", "lovely", "superb"], ["bad", "awful", "boring", "dull"]
    nouns = ["film", "plot", "acting", "story", "music"]
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = ["the", rng.choice(nouns), "was", rng.choice(good if label else bad)]
        if rng.random() < 0.5:
            words += ["and", "the", rng.choice(nouns), "was", rng.choice(["long", "short", "new", "old"])]
        out.append(LabeledText(" ".join(words) + " .", label))
    return out


def test_real_classifier_labels_and_policy(monkeypatch):
    train, evaluation = toy_sentiment(160, 0), toy_sentiment(60, 1)
    task = Task("toy-sentiment", "classification", corpus=[Passage(ex.text) for ex in train[:50]],
                train=train, eval=evaluation, label_names=["neg", "pos"])
    tok = build_tokenizer(task.texts_for_tokenizer(), vocab_size=200)
    clf = fit_classifier(tok, train, 2, ClassifierConfig(epochs=3, learning_rate=1e-3, batch_size=16), max_length=32)
    data = importance_labels(clf, tok, evaluation, max_length=32)
    assert len(data) >= 45  # the classifier learnt the toy rule (>= 75% right)
    sentiment = {"good", "great", "lovely", "superb", "bad", "awful", "boring", "dull"}
    hits = [(t in sentiment, y) for row in data
            for t, y in zip(tok.convert_ids_to_tokens(row["input_ids"]), row["token_labels"]) if y >= 0]
    rate = lambda flag: sum(y for s, y in hits if s == flag) / max(1, sum(s == flag for s, _ in hits))  # noqa: E731
    assert rate(True) > rate(False)  # sentiment words are labelled important more often
    # The whole path of `maskpolicy learn --method supervised` on a classification task. The
    # classifier is fine-tuned inside from options given as a dict (as from YAML); the one
    # fitted above stands in for it, so that the test fine-tunes only once.
    seen = {}

    def fit_once(tokenizer, examples, num_labels, config, max_length, progress):
        seen.update(config=config, num_labels=num_labels, n=len(examples))
        return clf

    monkeypatch.setattr(supervised, "fit_classifier", fit_once)
    config = SupervisedConfig(epochs=3, max_length=32, classifier={"epochs": 4, "learning_rate": 1e-3})
    policy, report = learn_supervised(task, tok, {"embedding_dim": 32}, config, progress=False)
    assert seen == {"config": ClassifierConfig(epochs=4, learning_rate=1e-3), "num_labels": 2, "n": 160}
    assert report["labels"] == "selective_importance" and report["classifier_train_accuracy"] >= 0.75
    assert set(report["held_out"]) >= {"precision", "recall", "f1"} and len(report["history"]) == 3
    assert report["held_out"]["recall"] > report["held_out"]["random_recall"]
