"""The context side of the hypergradient: d L_out / d u for a soft input mask u (meta/hypergrad.py).

Reference independent of meta/: a deep copy of the model fed ``inputs_embeds`` mixed by hand,
``(1 - u) E[x] + u E[MASK]``, stepped with ``torch.optim``, and central differences of the
outer loss with respect to single u_t. Tiny float64 BERT, dropout off.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from maskpolicy.meta.hypergrad import InnerConfig, func_unrolled, hypergradient, per_token_loss
from test_hypergrad import B, T, V, lm, one_thread  # noqa: F401  (the same tiny float64 BERT and thread setting)

MASK = 4


@pytest.fixture(scope="module")
def data():
    """Inner batch with *unmasked* ids, candidates labelled; u = 1 at candidates, 0 elsewhere."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (B, T), generator=gen)
    attention = torch.ones(B, T, dtype=torch.long)
    attention[0, -2:] = 0
    labels = torch.full((B, T), -100)
    for b in range(B):
        pos = torch.randperm(T - 3, generator=gen)[:3] + 1
        labels[b, pos] = ids[b, pos]
    u = (labels != -100).double()
    inner = {"input_ids": ids, "attention_mask": attention, "labels": labels, "mask_token_id": MASK}
    out_ids = torch.randint(5, V, (B, T), generator=gen)
    out_labels = torch.full((B, T), -100)
    out_labels[:, 2] = out_ids[:, 2]
    outer = {"input_ids": out_ids.masked_fill(out_labels != -100, MASK), "attention_mask": torch.ones(B, T, dtype=torch.long),
             "labels": out_labels}
    weights = torch.rand(B, T, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    return inner, outer, weights, u


def reference_outer_loss(lm, inner, outer, weights, u, cfg: InnerConfig) -> float:
    model = copy.deepcopy(lm)
    opt = (torch.optim.SGD(model.parameters(), lr=cfg.lr) if cfg.optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps))
    cand = inner["labels"] != -100
    for _ in range(cfg.steps):
        opt.zero_grad()
        table = model.get_input_embeddings().weight
        embeds = table[inner["input_ids"]] * (1 - u).unsqueeze(-1) + table[MASK] * u.unsqueeze(-1)
        logits = model(inputs_embeds=embeds, attention_mask=inner["attention_mask"]).logits
        tok = F.cross_entropy(logits.flatten(0, 1), inner["labels"].flatten(), reduction="none").view(B, T)
        ((torch.where(cand, weights, 0.0) * tok).sum() / cand.sum()).backward()
        opt.step()
    with torch.no_grad():
        logits = model(input_ids=outer["input_ids"], attention_mask=outer["attention_mask"]).logits
        return float(F.cross_entropy(logits.flatten(0, 1), outer["labels"].flatten()))


def test_soft_mask_at_one_is_a_mask_token(lm, data):
    inner, _, _, u = data
    soft = per_token_loss(lm, None, {**inner, "input_mask": u})
    hard = per_token_loss(lm, None, {**inner, "input_ids": inner["input_ids"].masked_fill(u.bool(), MASK)})
    assert torch.allclose(soft, hard, rtol=1e-12, atol=1e-14)
    unmasked = per_token_loss(lm, None, inner)
    assert not torch.allclose(soft, unmasked)  # the mask changes what the model sees


@pytest.mark.parametrize("cfg", [InnerConfig(steps=1, lr=0.1), InnerConfig(steps=2, lr=1e-2, optimizer="adam", adam_eps=1e-3)],
                         ids=["sgd-k1", "adam-k2"])
def test_input_grad_matches_higher_and_finite_differences(lm, data, cfg):
    inner, outer, weights, u = data
    res = {b: hypergradient(lm, inner, weights, outer, cfg, backend=b, input_mask=u) for b in ("func", "higher")}
    f, h = res["func"].input_grad, res["higher"].input_grad
    assert f.shape == (B, T) and float(f.abs().max()) > 0
    assert float((h - f).norm() / f.norm()) < 1e-9
    assert torch.all(f[inner["attention_mask"] == 0] == 0)
    # The loss-weight side is unchanged by asking for the context side (same point, same w).
    plain = hypergradient(lm, {**inner, "input_ids": inner["input_ids"].masked_fill(u.bool(), MASK)}, weights, outer, cfg)
    assert torch.allclose(res["func"].grad, plain.grad, rtol=1e-9, atol=1e-15)
    step = 1e-5
    # Candidates (u = 1: unmasking them a little) and visible tokens (u = 0: masking a little).
    positions = [(0, int(t)) for t in range(T - 2)] + [(2, 1), (2, 5)]
    for b, t in positions:
        plus, minus = u.clone(), u.clone()
        plus[b, t] += step
        minus[b, t] -= step
        fd = (reference_outer_loss(lm, inner, outer, weights, plus, cfg)
              - reference_outer_loss(lm, inner, outer, weights, minus, cfg)) / (2 * step)
        exact = float(f[b, t])
        assert abs(exact - fd) <= 1e-6 * abs(exact) + 1e-10, (b, t, exact, fd)  # rounding: ~1e-16 * L / step


def test_one_step_path_equals_unrolled_with_context(lm, data):
    inner, outer, weights, u = data
    cfg = InnerConfig(steps=1, lr=0.05)
    fast = hypergradient(lm, inner, weights, outer, cfg, input_mask=u)
    slow = func_unrolled(lm, inner, weights, outer, cfg, input_mask=u)
    assert float((fast.input_grad - slow.input_grad).norm() / slow.input_grad.norm()) < 1e-12
    assert float((fast.grad - slow.grad).norm() / slow.grad.norm()) < 1e-12


def test_fd_context_estimate_close_to_exact(lm, data):
    inner, outer, weights, u = data
    cfg = InnerConfig(steps=1, lr=1e-3)
    exact = hypergradient(lm, inner, weights, outer, cfg, backend="func", input_mask=u)
    est = hypergradient(lm, inner, weights, outer, cfg, backend="fd", input_mask=u)
    for a, b in ((est.input_grad, exact.input_grad), (est.grad, exact.grad)):
        cos = float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))
        assert cos > 0.99
        assert float((a - b).norm() / b.norm()) < 0.05


def test_input_mask_needs_the_mask_token_id(lm, data):
    from maskpolicy.policies.errors import DataError

    inner, outer, weights, u = data
    with pytest.raises(DataError, match="mask_token_id"):
        hypergradient(lm, {k: v for k, v in inner.items() if k != "mask_token_id"}, weights, outer,
                      InnerConfig(), input_mask=u)
    with pytest.raises(DataError, match="input_mask shape"):
        hypergradient(lm, inner, weights, outer, InnerConfig(), input_mask=u[:, :4])
