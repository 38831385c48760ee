"""Direct supervision: answer-span labels, budgeted precision/recall, and a policy network
that learns to find the answers of held-out entities on the synthetic birthplace task."""
from __future__ import annotations

import time

import datasets
import pytest
import torch

from maskpolicy.meta import metrics
from maskpolicy.meta.labels import answer_span_labels
from maskpolicy.meta.metrics import answer_recall, token_prf
from maskpolicy.meta.supervised import SupervisedConfig, learn_supervised, train_supervised
from maskpolicy.policies import LearnedPolicy, MaskingPolicy
from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.tasks.base import ClozeQuestion, Passage, Span, Task


@pytest.fixture(scope="module")
def task(small_synthetic_task):
    return small_synthetic_task


@pytest.fixture(scope="module")
def tok(small_synthetic_tokenizer):
    return small_synthetic_tokenizer


def test_labels_mark_exactly_the_answer_tokens(task, tok):
    data = answer_span_labels(task, tok)
    passages = [p for p in task.corpus if any(s.split == "train" for s in p.spans)]
    assert len(data) == len(passages) > 0
    for row, passage in zip(data, passages):
        labels = row["token_labels"]
        assert labels[0] == labels[-1] == -100 and -100 not in labels[1:-1]  # only [CLS]/[SEP] ignored
        answer = passage.text[passage.spans[0].start: passage.spans[0].end]
        positives = [t for t, y in zip(row["input_ids"], labels) if y == 1]
        assert tok.decode(positives) == answer and len(positives) == 1  # one token per answer
        assert len(row["word_ids"]) == len(row["input_ids"]) == len(labels)


def test_eval_split_is_the_held_out_entities(task, tok):
    train, held = answer_span_labels(task, tok), answer_span_labels(task, tok, split="eval")
    assert len(held) == sum(1 for p in task.corpus if p.spans and p.spans[0].split == "eval") > 0
    assert not set(train["key"]) & set(held["key"])  # disjoint entities
    assert train["input_ids"] != held["input_ids"]
    with pytest.raises(ConfigError):
        answer_span_labels(task, tok, split="test")


@pytest.fixture(scope="module")
def default_world():
    """The issue's claim is about the default world (200 entities): with 40, a few of the 20
    birthplace values are never an answer of a training entity, so recall drifts to ~0.93."""
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task

    task = get_task("synthetic:birthplace")
    return task, tokenizer_for_task(task)


def test_supervised_policy_finds_held_out_answers(default_world):
    task, tok = default_world
    start = time.perf_counter()
    policy, report = learn_supervised(task, tok, {}, SupervisedConfig(), progress=False)
    seconds = time.perf_counter() - start
    held = report["held_out"]
    assert held["recall"] >= 0.95 and held["recall_at_budget"] == held["recall"]
    # The budget is 1-2 of ~6-12 tokens and the answer is one: precision is capped near 1/2.
    assert held["precision"] >= 0.45 and held["f1"] >= 0.6
    assert abs(held["random_recall"] - 0.15) < 0.04  # random masking: about the budget fraction
    assert held["recall"] > 5 * held["random_recall"]
    assert report["labels"] == "answer_spans" and report["num_eval_sequences"] == held["sequences"]
    assert len(report["history"]) == 20 and "recall" in report["history"][-1]
    assert report["pos_weight"] == pytest.approx(min(20.0, 1 / report["positive_fraction"] - 1), rel=1e-2)
    assert seconds < 60  # ~2 s on 2 idle CPUs (40 Adam steps); generous for shared machines
    # The convenience used by progress bars agrees with token_prf, and the held-out set is
    # encoded once per (task, tokenizer, split): later calls reuse the cached tensors.
    assert answer_recall(policy, tok, task) == pytest.approx(held["recall"])
    cached = [v[2] for v in metrics._CACHE.values() if v[0] is task]
    answer_recall(policy, tok, task)
    assert len(cached) == 1 and [v[2] for v in metrics._CACHE.values() if v[0] is task][0] is cached[0]


class TablePolicy(MaskingPolicy):
    """Probabilities read from a fixed [B, T] table (for hand-computed metrics)."""

    def __init__(self, tokenizer, table: torch.Tensor) -> None:
        super().__init__(tokenizer)
        self.table = table

    def scores(self, input_ids, maskable, **extras):
        return self.table[: input_ids.shape[0], : input_ids.shape[1]]


def test_token_prf_hand_computed(tok):
    cls, sep, ign = tok.cls_token_id, tok.sep_token_id, -100
    a = [cls] + list(range(10, 20)) + [sep]  # 10 maskable tokens: budget round(1.5) = 2
    b = [cls] + list(range(10, 14)) + [sep]  # 4 maskable tokens: budget round(0.6) = 1
    data = datasets.Dataset.from_dict({
        "input_ids": [a, b],
        "word_ids": [[-1] + list(range(10)) + [-1], [-1, 0, 1, 2, 3, -1]],
        "token_labels": [[ign, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, ign], [ign, 0, 1, 0, 0, ign]],
    })
    table = torch.full((2, 12), 0.1)
    table[0, 1], table[0, 2], table[0, 5] = 0.9, 0.3, 0.8  # top-2: positions 1 (hit) and 5 (miss)
    table[1, 1], table[1, 2] = 0.7, 0.6  # top-1: position 1 (miss); both >= 0.5
    m = token_prf(TablePolicy(tok, table), data, rate=0.15)
    # Budgeted: 1 hit of 3 masked, 4 positives. Threshold: 2 hits of 4 chosen.
    assert (m["masked"], m["positives"], m["sequences"]) == (3, 4, 2)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 4)
    assert m["f1"] == pytest.approx(2 / 7)
    assert (m["threshold_precision"], m["threshold_recall"], m["threshold_f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert m["random_recall"] == pytest.approx((2 / 10 * 3 + 1 / 4 * 1) / 4)
    # A perfect policy: 2 of a's 3 positives (budget 2) and b's 1 -> 3 of 4.
    assert m["recall_ceiling"] == pytest.approx(3 / 4) and m["recall_of_ceiling"] == pytest.approx(1 / 3)


def test_no_supervision_signal_is_a_data_error(task, tok):
    no_spans = Task("hand-made", "cloze", corpus=[Passage("Dravik was born in Velmora .")],
                    train=[ClozeQuestion("Dravik was born in [BLANK] .", ["Velmora"])])
    with pytest.raises(DataError, match="no answer spans for --method supervised"):
        learn_supervised(no_spans, tok, {}, SupervisedConfig(epochs=1), progress=False)
    corpus_only = Task("plain-text", "corpus", corpus=[Passage("some years ago it was said .")])
    with pytest.raises(DataError, match="no supervision signal"):
        learn_supervised(corpus_only, tok, {}, SupervisedConfig(epochs=1), progress=False)
    train_only = Task("train-only", "cloze", corpus=[Passage("Dravik was born in Velmora .", [Span(19, 26)])])
    with pytest.raises(DataError, match="no answer spans"):
        answer_span_labels(train_only, tok, split="eval")
    policy, report = learn_supervised(train_only, tok, {}, SupervisedConfig(epochs=1), progress=False)
    assert "held_out" not in report and report["num_eval_sequences"] == 0  # trains without a held-out set


def test_deterministic_for_the_seed(task, tok):
    def run(seed):
        policy, report = learn_supervised(task, tok, {"embedding_dim": 32}, SupervisedConfig(epochs=2, seed=seed),
                                          progress=False)
        return policy.state_dict(), report["history"]

    (w1, h1), (w2, h2), (w3, _) = run(0), run(0), run(1)
    assert h1 == h2 and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


def test_config_validation_and_explicit_pos_weight(task, tok):
    for bad in ({"epochs": 0}, {"learning_rate": -1.0}, {"pos_weight": 0.0}, {"rate": 1.5},
                {"selective": {"delta": "x"}}, {"classifier": {"nope": 1}}, {"batch_size": True}):
        with pytest.raises(ConfigError):
            SupervisedConfig(**bad)
    data = answer_span_labels(task, tok)
    report = train_supervised(LearnedPolicy(tok, embedding_dim=16), data, SupervisedConfig(epochs=1, pos_weight=3.0),
                              progress=False)
    assert report["pos_weight"] == 3.0 and "held_out" not in report and report["train"]["sequences"] == len(data)
    with pytest.raises(DataError):
        train_supervised(LearnedPolicy(tok), data.map(lambda r: {"token_labels": [0] * len(r["input_ids"])}),
                         progress=False)
