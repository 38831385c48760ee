"""The linear probe (``train/linear_probe.py``): a logistic regression on frozen features."""
from __future__ import annotations

import pytest
import torch

from maskpolicy.policies.errors import ConfigError
from maskpolicy.train.config import FinetuneConfig, PretrainConfig
from maskpolicy.train.linear_probe import L2_PENALTY, fit_logistic_regression, linear_probe, sentence_features


def _objective(x, y, weight, bias, l2=L2_PENALTY):
    return torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()


def test_the_fit_is_the_minimum_of_the_penalised_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(300, generator=gen) > 0).long() + (x[:, 2] > 1).long()  # 3 classes
    weight, bias = fit_logistic_regression(x, y, 3)
    assert weight.shape == (12, 3) and bias.shape == (3,)
    # Stationary: the gradient of the objective, taken afresh, vanishes at the fit.
    w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    _objective(x.double(), y, w, b).backward()
    assert w.grad.abs().max() < 1e-6 and b.grad.abs().max() < 1e-6
    # An independent reference: plain gradient descent from a random start reaches the same
    # objective value (convex, strictly in W; the bias matters only up to a shared shift).
    w_ref = torch.randn(12, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    b_ref = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w_ref, b_ref], lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        _objective(x.double(), y, w_ref, b_ref).backward()
        opt.step()
    with torch.no_grad():
        assert _objective(x.double(), y, weight, bias) <= _objective(x.double(), y, w_ref, b_ref) + 1e-7
        assert torch.allclose(weight, w_ref, atol=1e-2)
        probabilities = torch.softmax(x.double() @ weight + bias, -1)  # [300, 3]
        assert torch.allclose(probabilities, torch.softmax(x.double() @ w_ref + b_ref, -1), atol=1e-2)


def test_features_are_mean_pooled_over_real_tokens_only(tiny_lm_dir, toy_classification):
    from maskpolicy.train.models import load_masked_lm

    task, tokenizer = toy_classification
    lm = load_masked_lm(tiny_lm_dir)
    short, long = task.train[0], task.train[1]
    pair, _ = sentence_features(lm, tokenizer, [short, long], max_length=64)  # padded together
    alone, labels = sentence_features(lm, tokenizer, [short], max_length=64)  # no padding
    assert pair.shape == (2, lm.config.hidden_size) and labels.tolist() == [short.label]
    assert torch.allclose(pair[0], alone[0], atol=1e-5)
    with torch.no_grad():
        ids = torch.tensor([tokenizer(short.text)["input_ids"]])
        hidden = lm.bert(input_ids=ids).last_hidden_state  # [1, T, H]
    assert torch.allclose(alone[0], hidden[0].mean(0), atol=1e-5)


def test_the_probe_is_deterministic_and_leaves_the_model_and_random_state_alone(tiny_lm_dir, toy_classification):
    from maskpolicy.train.finetune import finetune_classifier
    from maskpolicy.train.models import load_masked_lm

    task, tokenizer = toy_classification
    lm = load_masked_lm(tiny_lm_dir).train()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    config = FinetuneConfig(method="linear", max_train_examples=300)
    torch.manual_seed(5)
    first = finetune_classifier(lm, tokenizer, task, config, max_length=64, seed=0)
    after_probe = torch.rand(3)
    torch.manual_seed(5)
    second = finetune_classifier(lm, tokenizer, task, config, max_length=64, seed=1)  # the seed does not matter
    assert first == second and first["num_eval"] == len(task.eval) and first["finetune_steps"] == 0
    after_second = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_second, after_probe)
    assert torch.equal(torch.rand(3), after_probe)  # the probe drew nothing from the global generator
    assert lm.training and all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    # One keyword decides the label and it is part of the mean: a linear read-out finds it
    # even in a randomly initialised encoder.
    assert first["accuracy"] >= 0.8


def test_the_method_is_validated():
    assert FinetuneConfig().method == "full"
    with pytest.raises(ConfigError, match="method must be one of full, linear"):
        FinetuneConfig(method="head")
    with pytest.raises(ConfigError, match="method"):
        PretrainConfig(probe={"method": "svm"})
    assert PretrainConfig(probe={"method": "linear", "max_train_examples": 50}).probe.method == "linear"


def test_a_probe_without_labelled_examples_is_refused(toy_classification, tiny_lm_dir):
    from maskpolicy.policies.errors import DataError
    from maskpolicy.tasks.base import Task
    from maskpolicy.train.models import load_masked_lm

    task, tokenizer = toy_classification
    empty = Task("empty", "classification", corpus=task.corpus, train=[], eval=task.eval, label_names=["neg", "pos"])
    with pytest.raises(DataError, match="linear probe"):
        linear_probe(load_masked_lm(tiny_lm_dir), tokenizer, empty, FinetuneConfig(method="linear"))
