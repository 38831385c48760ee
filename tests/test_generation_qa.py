"""Closed-book QA by generation: SQuAD-style normalisation, exact match and token F1 on
hand-made cases; a tiny BART fine-tuned on question -> answer pairs answers them."""
from __future__ import annotations

import pytest
import torch

from maskpolicy.policies.errors import ConfigError
from maskpolicy.tasks.base import ClozeQuestion
from maskpolicy.train.generation_qa import (QAConfig, _hold_out, evaluate_generation_qa, exact_match, finetune_qa,
                                            generate_answers, normalize_answer, qa_scores, question_text, token_f1)


@pytest.mark.parametrize("text, expected", [
    ("The Big Apple!", "big apple"), ("  an   owl  ", "owl"), ("Theatre", "theatre"), ("a.b,c", "abc"),
    ("New York City.", "new york city"), ("", ""), ("The the a", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction, golds, em, f1", [
    ("Paris", ["paris"], 1.0, 1.0),
    ("the Paris", ["Paris", "Lyon"], 1.0, 1.0),
    ("Paris France", ["Paris"], 0.0, 2 * 0.5 * 1.0 / 1.5),
    ("big apple pie", ["The big apple"], 0.0, 0.8),
    ("Lyon", ["Paris", "Lyon city"], 0.0, 2 * 1.0 * 0.5 / 1.5),
    ("", ["Paris"], 0.0, 0.0),
    ("a", ["the"], 1.0, 1.0),  # both normalise to empty
    ("x y x", ["x x"], 0.0, 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)),  # counts clipped per token
])
def test_exact_match_and_f1(prediction, golds, em, f1):
    assert exact_match(prediction, golds) == em
    assert token_f1(prediction, golds) == pytest.approx(f1)


def test_scores_are_means_over_questions():
    questions = [ClozeQuestion("x [BLANK]", ["Paris"]), ClozeQuestion("y [BLANK]", ["big apple"])]
    assert qa_scores(["paris", "apple"], questions) == {"em": 0.5, "f1": pytest.approx((1 + 2 / 3) / 2)}


def test_a_tiny_bart_learns_to_answer_and_reports_long_answers(tokenizer):
    from maskpolicy.train.seq2seq_models import preset_seq2seq_model

    torch.manual_seed(0)
    # Four whole-word tokens of the test vocabulary (an answer of one token).
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) >= 4)[:4]
    # The answer is the question's first word: learnable from the question alone.
    train = [ClozeQuestion(f"{w} is near [BLANK] .", [w]) for w in words] * 8
    model = preset_seq2seq_model("tiny", tokenizer, 32)
    assert question_text(train[0], tokenizer) == f"{words[0]} is near [MASK] ."
    result = evaluate_generation_qa(model, tokenizer, train, train[:4],
                                    QAConfig(epochs=30, learning_rate=1e-3, batch_size=8, max_new_tokens=4, dev_fraction=0.0),
                                    max_length=32)
    assert result["qa_em"] == 1.0 and result["qa_em_beam"] == 1.0 and result["qa_f1"] == 1.0
    assert [e["greedy"] for e in result["examples"]] == words
    long = [ClozeQuestion(f"{words[0]} is near [BLANK] .", [" ".join(words + words)])]
    assert evaluate_generation_qa(model, tokenizer, train[:4], long, QAConfig(epochs=1, max_new_tokens=4),
                                  max_length=32)["answers_over_generation_limit"] == 1


def _tiny_world(tokenizer):
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) >= 4)[:12]
    return [ClozeQuestion(f"{w} is near [BLANK] .", [w]) for w in words]


def test_the_kept_epoch_is_the_best_on_the_held_out_questions(tokenizer):
    from maskpolicy.train.seq2seq_models import preset_seq2seq_model

    torch.manual_seed(0)
    questions = _tiny_world(tokenizer)
    model = preset_seq2seq_model("tiny", tokenizer, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = QAConfig(epochs=12, learning_rate=1e-3, batch_size=4, max_new_tokens=4, dev_fraction=0.25, patience=3)
    tuned, fit = finetune_qa(model, tokenizer, questions, config, max_length=32, seed=1)
    _, dev = _hold_out(questions, 0.25, 1)
    assert len(dev) == 3 and not set(q.text for q in dev) & set(q.text for q in _hold_out(questions, 0.25, 1)[0])
    assert 1 <= fit["qa_epochs"] <= fit["qa_epochs_run"] <= 12
    # Training stops `patience` epochs after the best one, or runs out of epochs.
    assert fit["qa_epochs_run"] == 12 or fit["qa_epochs_run"] - fit["qa_epochs"] == 3
    # The returned weights are the kept epoch's: they score its held-out exact match again.
    again = qa_scores(generate_answers(tuned, tokenizer, dev, max_new_tokens=4, max_length=32), dev)["em"]
    assert again == fit["qa_dev_em"]
    # The input model is left as it was.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_without_a_hold_out_every_epoch_runs_and_the_last_is_kept(tokenizer):
    from maskpolicy.train.seq2seq_models import preset_seq2seq_model

    questions = _tiny_world(tokenizer)
    model = preset_seq2seq_model("tiny", tokenizer, 32)
    _, fit = finetune_qa(model, tokenizer, questions, QAConfig(epochs=3, dev_fraction=0.0, patience=1), max_length=32)
    assert fit == {"qa_epochs": 3, "qa_epochs_run": 3, "qa_dev_em": None, "qa_dev_loss": None}
    # Too few questions for a hold-out: all of them are fitted.
    assert _hold_out(questions[:2], 0.2, 0) == (questions[:2], [])
    fit_rows, dev = _hold_out(questions, 0.5, 0)
    assert len(dev) == 6 and sorted(q.text for q in fit_rows + dev) == sorted(q.text for q in questions)


def test_bad_qa_options():
    with pytest.raises(ConfigError, match="num_beams"):
        QAConfig(num_beams=0)
    with pytest.raises(ConfigError, match="learning_rate"):
        QAConfig(learning_rate=2)
    with pytest.raises(ConfigError, match="dev_fraction"):
        QAConfig(dev_fraction=1.0)
    with pytest.raises(ConfigError, match="patience"):
        QAConfig(patience=0)
