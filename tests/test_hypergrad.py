"""Hypergradient backends (meta/hypergrad.py) on a tiny float64 BERT with dropout off.

The reference for "exact" is independent of meta/: a deep copy of the model stepped with
``torch.optim.SGD``/``Adam`` and ``loss.backward()``, and central differences of the outer loss
with respect to single weights w_i.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

import maskpolicy.meta.hypergrad as hg
from maskpolicy.meta.hypergrad import HyperResult, InnerConfig, func_unrolled, hypergradient, per_token_loss, prepare_for_meta
from maskpolicy.policies.errors import ConfigError, DataError, MaskpolicyError

B, T, V = 3, 8, 50

CONFIGS = {
    "sgd-k1": InnerConfig(steps=1, lr=0.1),
    "sgd-k2": InnerConfig(steps=2, lr=0.1),
    "adam-k1": InnerConfig(steps=1, lr=1e-2, optimizer="adam"),
    "adam-k2": InnerConfig(steps=2, lr=1e-2, optimizer="adam", adam_betas=(0.8, 0.99)),
    "sgd-k2-subset": InnerConfig(steps=2, lr=0.1, params="encoder|cls"),
    "adam-k1-subset": InnerConfig(steps=1, lr=1e-2, optimizer="adam", params=r"layer\.1\."),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny float64 ops gain nothing from threads, and spin-waiting OpenMP threads make them
    ~10x slower when the CPUs are shared; restored afterwards for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm(one_thread):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        max_position_embeddings=16)
    model = prepare_for_meta(BertForMaskedLM(config).double())
    # Bias the outer task a little away from init so gradients are not all tiny.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def make_batch(gen: torch.Generator, labelled_per_row: int) -> dict:
    ids = torch.randint(5, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, -2:] = 0  # some right padding
    mask[1, -1:] = 0
    labels = torch.full((B, T), -100)
    for b in range(B):
        pos = torch.randperm(T - 3, generator=gen)[:labelled_per_row] + 1
        labels[b, pos] = ids[b, pos]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(1)
    inner = make_batch(gen, 3)
    outer = make_batch(gen, 1)  # cloze-like: one answer token per row
    weights = torch.rand(B, T, generator=gen, dtype=torch.float64) * 0.9 + 0.05  # in (0, 1)
    return inner, outer, weights


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def reference_step(lm, inner, outer, weights, cfg: InnerConfig):
    """(L_out(phi_K), stepped model) by plain torch.optim stepping of a deep copy."""
    model = copy.deepcopy(lm)
    chosen = [p for n, p in model.named_parameters() if cfg.params == "all" or re.search(cfg.params, n)]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(chosen, lr=cfg.lr)
    else:
        opt = torch.optim.Adam(chosen, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps)
    cand = inner["labels"] != -100
    for _ in range(cfg.steps):
        opt.zero_grad()
        logits = model(input_ids=inner["input_ids"], attention_mask=inner["attention_mask"]).logits
        tok = F.cross_entropy(logits.flatten(0, 1), inner["labels"].flatten(), reduction="none").view(B, T)
        ((torch.where(cand, weights, 0.0) * tok).sum() / cand.sum()).backward()
        opt.step()
    with torch.no_grad():
        logits = model(input_ids=outer["input_ids"], attention_mask=outer["attention_mask"]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), outer["labels"].flatten())  # mean over labelled
    return float(loss), model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_func_equals_higher(lm, data, name):
    inner, outer, weights = data
    cfg = CONFIGS[name]
    f = hypergradient(lm, inner, weights, outer, cfg, backend="func")
    h = hypergradient(lm, inner, weights, outer, cfg, backend="higher")
    assert isinstance(f, HyperResult) and f.grad.shape == (B, T)
    print(f"{name}: |func - higher| / |func| = {rel(h.grad, f.grad):.2e}")
    assert rel(h.grad, f.grad) < 1e-9
    assert f.outer_loss == pytest.approx(h.outer_loss, rel=1e-12)
    assert f.inner_loss == pytest.approx(h.inner_loss, rel=1e-12)
    assert set(f.updated) == set(h.updated)
    for n in f.updated:
        assert torch.allclose(f.updated[n], h.updated[n], rtol=1e-10, atol=1e-13), n
    assert float(f.grad.abs().max()) > 0


@pytest.mark.parametrize("name", ["sgd-k1", "sgd-k2", "adam-k1", "adam-k2", "sgd-k2-subset"])
def test_exact_backends_match_finite_differences(lm, data, name):
    inner, outer, weights = data
    cfg = CONFIGS[name]
    if cfg.optimizer == "adam":
        # Adam's one-step map g -> g / (|g| + eps) is extremely curved where |g| ~ eps; a larger
        # eps keeps the central difference (h below) in its linear regime. Same map, same check.
        cfg = InnerConfig(**{**cfg.__dict__, "adam_eps": 1e-3})
    results = {b: hypergradient(lm, inner, weights, outer, cfg, backend=b) for b in ("func", "higher")}

    # phi_K and L_out agree with plain torch.optim stepping (this also checks our Adam update
    # against torch.optim.Adam and that the tied decoder weight followed the embeddings).
    ref_loss, stepped = reference_step(lm, inner, outer, weights, cfg)
    assert stepped.cls.predictions.decoder.weight is stepped.bert.embeddings.word_embeddings.weight
    ref_params = dict(stepped.named_parameters())
    for res in results.values():
        assert res.outer_loss == pytest.approx(ref_loss, rel=1e-12)
        for n, t in res.updated.items():
            assert torch.allclose(t, ref_params[n], rtol=1e-10, atol=1e-12), n

    h = 1e-5
    labelled = (inner["labels"] != -100).nonzero().tolist()[::2]  # a handful of single w_i
    for b, t in labelled:
        plus, minus = weights.clone(), weights.clone()
        plus[b, t] += h
        minus[b, t] -= h
        fd = (reference_step(lm, inner, outer, plus, cfg)[0] - reference_step(lm, inner, outer, minus, cfg)[0]) / (2 * h)
        for backend, res in results.items():
            exact = float(res.grad[b, t])
            print(f"{name} {backend} w[{b},{t}]: exact {exact:+.10e} fd {fd:+.10e}")
            assert abs(exact - fd) <= 1e-6 * abs(exact) + 1e-12, (backend, b, t)


def test_fd_estimate_close_to_exact_for_one_step_sgd(lm, data):
    inner, outer, weights = data
    cfg = InnerConfig(steps=1, lr=1e-3)
    exact = hypergradient(lm, inner, weights, outer, cfg, backend="func").grad
    est = hypergradient(lm, inner, weights, outer, cfg, backend="fd")
    cos = float(F.cosine_similarity(est.grad.flatten(), exact.flatten(), dim=0))
    err = rel(est.grad, exact)
    print(f"fd vs exact (K=1 SGD, default eps): cosine {cos:.6f}, relative L2 error {err:.2e}")
    assert cos > 0.99
    assert err < 0.05
    assert torch.all(est.grad[inner["labels"] == -100] == 0)

    # The default eps is 1e-2 / ||v|| (a parameter step of L2 norm 1e-2): passing it explicitly
    # gives the same numbers, and a 10x smaller step is ~100x more accurate (O(eps^2) truncation).
    v_norm = _outer_grad_norm(lm, outer, est.updated)
    same = hypergradient(lm, inner, weights, outer, cfg, backend="fd", fd_eps=1e-2 / v_norm).grad
    assert torch.allclose(same, est.grad, rtol=1e-9, atol=0)
    finer = hypergradient(lm, inner, weights, outer, cfg, backend="fd", fd_eps=1e-3 / v_norm).grad
    print(f"fd with a 10x smaller step: relative L2 error {rel(finer, exact):.2e}")
    assert rel(finer, exact) < err / 20


def _outer_grad_norm(lm, outer, phi: dict) -> float:
    leaves = {n: t.clone().requires_grad_() for n, t in phi.items()}
    count = int((outer["labels"] != -100).sum())
    loss = per_token_loss(lm, leaves, outer).sum() / count
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return float(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))


def test_fd_takes_real_inner_steps(lm, data):
    inner, outer, weights = data
    cfg = CONFIGS["adam-k2"]
    exact = hypergradient(lm, inner, weights, outer, cfg, backend="func")
    est = hypergradient(lm, inner, weights, outer, cfg, backend="fd")
    assert est.outer_loss == pytest.approx(exact.outer_loss, rel=1e-12)
    for n in exact.updated:
        assert torch.allclose(est.updated[n], exact.updated[n], rtol=1e-10, atol=1e-13)
    # One-step-SGD approximation of an Adam hypergradient: a direction, not the scale.
    print("fd vs exact (K=2 Adam) cosine:", float(F.cosine_similarity(est.grad.flatten(), exact.grad.flatten(), dim=0)))


@pytest.mark.parametrize("params", ["all", "encoder|cls"])
def test_efficient_one_step_path_equals_unrolled(lm, data, params):
    inner, outer, weights = data
    cfg = InnerConfig(steps=1, lr=0.05, params=params)
    fast = hypergradient(lm, inner, weights, outer, cfg, backend="func")
    slow = func_unrolled(lm, inner, weights, outer, cfg)
    print(f"efficient vs unrolled ({params}): {rel(fast.grad, slow.grad):.2e}")
    assert rel(fast.grad, slow.grad) < 1e-12
    assert fast.outer_loss == pytest.approx(slow.outer_loss, rel=1e-14)
    assert fast.inner_loss == pytest.approx(slow.inner_loss, rel=1e-14)


@pytest.mark.parametrize("backend", ["func", "higher", "fd"])
def test_no_side_effects(lm, data, backend):
    inner, outer, weights = data
    model = copy.deepcopy(lm)
    model.bert.embeddings.position_embeddings.weight.requires_grad_(False)  # a caller's frozen parameter
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    w = weights.clone().requires_grad_()  # as a policy would hand it over
    for cfg in (CONFIGS["sgd-k1"], CONFIGS["adam-k2"], CONFIGS["sgd-k2-subset"]):
        res = hypergradient(model, inner, w, outer, cfg, backend=backend)
        assert not res.grad.requires_grad and res.grad.dtype == w.dtype
        assert all(not t.requires_grad for t in res.updated.values())
    assert w.grad is None
    assert model.training
    for n, p in model.named_parameters():
        assert p.grad is None, n
        assert p.requires_grad == flags[n], n
        assert torch.equal(p, before[n]), n
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_grad_shape_dtype_and_zero_at_unlabelled(lm, data):
    inner, outer, weights = data
    w = weights.float().clone()
    w[inner["labels"] == -100] = float("inf")  # garbage where nothing is labelled must not matter
    res = hypergradient(lm, inner, w, outer, CONFIGS["sgd-k1"])
    assert res.grad.dtype == torch.float32 and res.grad.shape == (B, T)
    assert torch.all(res.grad[inner["labels"] == -100] == 0)
    assert torch.count_nonzero(res.grad[inner["labels"] != -100]) > 0


def test_config_errors(lm, data):
    inner, outer, weights = data
    for bad in (dict(steps=0), dict(steps=-1), dict(lr=0.0), dict(lr=-1e-3), dict(optimizer="rmsprop"),
                dict(params="("), dict(adam_eps=0.0), dict(adam_betas=(0.9, 1.0))):
        with pytest.raises(ConfigError):
            InnerConfig(**bad)
    with pytest.raises(ConfigError, match="matches no parameter"):
        hypergradient(lm, inner, weights, outer, InnerConfig(params="no_such_parameter"))
    with pytest.raises(ConfigError, match="unknown hypergradient backend"):
        hypergradient(lm, inner, weights, outer, InnerConfig(), backend="jax")
    with pytest.raises(ConfigError):
        hypergradient(lm, inner, weights, outer, InnerConfig(), backend="fd", fd_eps=-1.0)
    cfg = InnerConfig()
    cfg.steps = 0  # mutated after construction: caught again at use
    with pytest.raises(ConfigError):
        hypergradient(lm, inner, weights, outer, cfg)
    unlabelled = {**outer, "labels": torch.full((B, T), -100)}
    with pytest.raises(DataError):
        hypergradient(lm, inner, weights, unlabelled, InnerConfig())
    with pytest.raises(DataError):
        hypergradient(lm, inner, weights[:, :4], outer, InnerConfig())


@pytest.mark.parametrize("backend", ["func", "higher", "fd"])
def test_non_finite_raises_maskpolicy_error(lm, data, backend, monkeypatch):
    inner, outer, weights = data
    bad = weights.clone()
    bad[inner["labels"] != -100] = float("inf")  # the inner step blows phi up: L_out is NaN
    with pytest.raises(MaskpolicyError, match="not finite|nan|inf"):
        hypergradient(lm, inner, bad, outer, CONFIGS["sgd-k1"], backend=backend)
    with pytest.raises(MaskpolicyError, match="outer loss is nan"):
        hypergradient(lm, inner, bad, outer, CONFIGS["adam-k2"], backend=backend)

    # A NaN outer loss from the loss itself (e.g. a broken head) is caught the same way.
    real = hg.outer_loss
    monkeypatch.setattr(hg, "outer_loss", lambda *a: real(*a) * float("nan"))
    with pytest.raises(MaskpolicyError, match="outer loss is nan"):
        hypergradient(lm, inner, weights, outer, CONFIGS["sgd-k2"], backend=backend)


def test_prepare_for_meta_sets_eager_attention():
    config = BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = BertForMaskedLM(config)
    assert prepare_for_meta(model) is model
    assert model.config._attn_implementation == "eager"


def test_per_token_loss_matches_full_logits(lm, data):
    """The labelled-only vocabulary projection gives the same per-token CE as full logits."""
    inner, _, _ = data
    logits = lm(input_ids=inner["input_ids"], attention_mask=inner["attention_mask"]).logits  # [B, T, V]
    full = F.cross_entropy(logits.flatten(0, 1), inner["labels"].flatten(), reduction="none").view(B, T)
    got = per_token_loss(lm, None, inner)
    assert got.shape == (B, T)
    assert torch.allclose(got, full, rtol=1e-12, atol=1e-14)
    assert torch.all(got[inner["labels"] == -100] == 0)
    with_params = per_token_loss(lm, dict(lm.named_parameters()), inner)
    assert torch.allclose(with_params, full, rtol=1e-12, atol=1e-14)


def test_backends_agree_with_dropout_on_and_the_same_seed(data):
    """Dropout on (train mode): from the same random state every backend sees the same masks,
    so func == higher exactly and fd (which replays the inner forward's masks) ~ func."""
    inner, outer, weights = data
    torch.manual_seed(3)
    config = BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                        max_position_embeddings=16)
    model = prepare_for_meta(BertForMaskedLM(config).double()).train()
    cfg = InnerConfig(steps=1, lr=1e-3)
    res = {}
    for backend in ("func", "higher", "fd"):
        torch.manual_seed(7)
        res[backend] = hypergradient(model, inner, weights, outer, cfg, backend=backend)
    after = torch.rand(1)
    assert rel(res["higher"].grad, res["func"].grad) < 1e-9
    cos = float(F.cosine_similarity(res["fd"].grad.flatten(), res["func"].grad.flatten(), dim=0))
    print(f"dropout on: fd vs func cosine {cos:.6f}")
    assert cos > 0.99
    torch.manual_seed(7)
    hypergradient(model, inner, weights, outer, cfg, backend="func")
    assert torch.equal(torch.rand(1), after)  # fd leaves the random stream where func does
    assert model.training
