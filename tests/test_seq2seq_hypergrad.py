"""Hypergradients with an encoder-decoder inner model (meta/seq2seq_inner.py), float64 BART,
dropout off, both output formats and both span markers (mask token, sentinels).

The references are independent of meta/: the weighted inner loss is rebuilt from the
model's logits with a Python loop that finds each candidate's target position by itself,
a deep copy is stepped with ``torch.optim``, the outer loss is the model's own
``loss`` (Hugging Face's mean CE over the answer tokens), and the hypergradient is
checked against central differences of that outer loss in single weights w_i.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import build_test_tokenizer
from transformers import BartConfig, BartForConditionalGeneration

from maskpolicy.meta.hypergrad import InnerConfig, hypergradient, per_token_loss, prepare_for_meta
from maskpolicy.meta.seq2seq_inner import meta_collator, seq2seq_inner_batch, seq2seq_outer_batch
from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.policies.span_corruption import corrupt_spans, target_sources
from maskpolicy.tasks.base import BLANK, ClozeQuestion

SENTINELS = [f"<extra_id_{i}>" for i in range(20)]
TEXTS = ["anna was born in paris and lives in rome", "the river flows past the old mill",
         "bob works as a baker in lyon", "the harbour of oslo is cold in winter"]
QUESTIONS = [ClozeQuestion(f"anna was born in {BLANK} .", ["paris"]), ClozeQuestion(f"bob works as a {BLANK} .", ["baker"]),
             ClozeQuestion(f"the harbour of {BLANK} is cold .", ["oslo"])]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["mask", "sentinel"])
def tokenizer(request):
    tok = build_test_tokenizer(TEXTS + [q.text.replace(BLANK, q.answers[0]) for q in QUESTIONS])
    if request.param == "sentinel":
        tok.add_special_tokens({"additional_special_tokens": SENTINELS})
    return tok


@pytest.fixture(scope="module")
def lm(tokenizer):
    torch.manual_seed(0)
    eos = tokenizer.sep_token_id
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=eos,
                        decoder_start_token_id=eos, forced_eos_token_id=eos)
    model = prepare_for_meta(BartForConditionalGeneration(config).double())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def passages(tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    candidates = torch.zeros_like(enc["input_ids"], dtype=torch.bool)
    # Runs of candidates of length 1 and 2, several per row; never the special tokens.
    for b, positions in enumerate([[1, 4, 5], [2, 3, 6], [1, 5], [3, 4, 8]]):
        candidates[b, positions] = True
    return enc["input_ids"], enc["attention_mask"], candidates


@pytest.fixture(scope="module", params=["spans-cloze", "full-cloze", "spans-qa"])
def data(request, tokenizer, lm):
    output, form = request.param.split("-")
    ids, attention, candidates = passages(tokenizer)
    collator = meta_collator(tokenizer, output, lm)
    inner = seq2seq_inner_batch(collator, ids, attention, candidates)
    outer = seq2seq_outer_batch(collator, QUESTIONS, 32, form=form)
    weights = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.9 + 0.05
    return output, ids, candidates, inner, outer, weights


def test_target_sources_point_at_the_tokens_they_reconstruct():
    ids = [101, 7, 8, 9, 10, 11, 102]
    mask = [False, True, True, False, True, False, False]
    for output in ("spans", "full"):
        encoder, target = corrupt_spans(ids, mask, [500, 501], output=output, end_id=102)
        sources = target_sources(mask, output, end=output == "spans")
        assert len(sources) == len(target)
        assert sorted(s for s in sources if s >= 0) == [i for i, m in enumerate(mask) if m]  # each candidate once
        assert all(target[j] == ids[s] for j, s in enumerate(sources) if s >= 0)


def _reference_token_losses(model, inner, ids, candidates, output) -> torch.Tensor:
    """[B, T] CE of each candidate's reconstruction, found without target_source: in
    ``spans`` the k-th non-marker target token of a row is the k-th candidate; in ``full``
    target position i is position i."""
    logits = model(input_ids=inner["input_ids"], attention_mask=inner["attention_mask"],
                   decoder_input_ids=inner["decoder_input_ids"]).logits
    out = torch.zeros(ids.shape, dtype=logits.dtype)
    labels = inner["labels"]
    for b in range(ids.shape[0]):
        chosen = candidates[b].nonzero().flatten().tolist()
        if output == "full":
            slots = chosen
        else:
            marker = {int(t) for t in inner["input_ids"][b]} - {int(t) for t in ids[b]}
            slots = [j for j, t in enumerate(labels[b].tolist()) if t not in marker and t != -100][: len(chosen)]
        for i, j in zip(chosen, slots):
            assert int(labels[b, j]) == int(ids[b, i])
            out[b, i] = F.cross_entropy(logits[b, j][None], labels[b, j][None])
    return out


def reference_step(lm, output, inner, outer, ids, candidates, weights, cfg: InnerConfig) -> float:
    model = copy.deepcopy(lm)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr) if cfg.optimizer == "sgd" else torch.optim.Adam(
        params, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps)
    for _ in range(cfg.steps):
        opt.zero_grad()
        loss = (weights * _reference_token_losses(model, inner, ids, candidates, output)).sum() / candidates.sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(model(input_ids=outer["input_ids"], attention_mask=outer["attention_mask"],
                           decoder_input_ids=outer["decoder_input_ids"], labels=outer["labels"]).loss)


def test_outer_batch_scores_the_answer_tokens_only(tokenizer, lm):
    answers = [tokenizer(q.answers[0], add_special_tokens=False)["input_ids"] for q in QUESTIONS]
    for output in ("spans", "full"):
        outer = seq2seq_outer_batch(meta_collator(tokenizer, output, lm), QUESTIONS, 32, form="cloze")
        for b, answer in enumerate(answers):
            assert [t for t in outer["labels"][b].tolist() if t != -100] == answer
            assert not set(answer) & set(outer["input_ids"][b].tolist())  # the answer is hidden from the encoder
    qa = seq2seq_outer_batch(meta_collator(tokenizer, "spans", lm), QUESTIONS, 32, form="qa")
    for b, answer in enumerate(answers):
        assert answer == [t for t in qa["labels"][b].tolist() if t not in (-100, tokenizer.cls_token_id,
                                                                          tokenizer.sep_token_id)]
    with pytest.raises(ConfigError, match="outer form"):
        seq2seq_outer_batch(meta_collator(tokenizer, "spans", lm), QUESTIONS, 32, form="essay")


def test_per_token_loss_scatters_each_candidates_reconstruction(lm, data):
    output, ids, candidates, inner, outer, _ = data
    got = per_token_loss(lm, None, inner)  # [B, T]
    assert got.shape == ids.shape
    assert torch.all(got[~candidates] == 0) and torch.all(got[candidates] > 0)
    assert torch.allclose(got, _reference_token_losses(lm, inner, ids, candidates, output), rtol=1e-12, atol=1e-14)
    # The outer batch (no target_source): [B, L] whose mean is the model's own loss.
    per = per_token_loss(lm, None, outer)
    n = int((outer["labels"] != -100).sum())
    own = lm(input_ids=outer["input_ids"], attention_mask=outer["attention_mask"],
             decoder_input_ids=outer["decoder_input_ids"], labels=outer["labels"]).loss
    assert float(per.sum().detach() / n) == pytest.approx(float(own.detach()), rel=1e-12)


@pytest.mark.parametrize("cfg", [InnerConfig(steps=1, lr=0.5), InnerConfig(steps=2, lr=0.3),
                                 InnerConfig(steps=1, lr=1e-2, optimizer="adam", adam_eps=1e-2)],
                         ids=["sgd-k1", "sgd-k2", "adam-k1"])
def test_func_hypergradient_matches_finite_differences(lm, data, cfg):
    output, ids, candidates, inner, outer, weights = data
    result = hypergradient(lm, inner, weights, outer, cfg, backend="func")
    assert result.outer_loss == pytest.approx(reference_step(lm, output, inner, outer, ids, candidates, weights, cfg), rel=1e-12)
    assert torch.all(result.grad[~candidates] == 0)
    h = 1e-5
    for b, t in candidates.nonzero().tolist()[::2]:
        plus, minus = weights.clone(), weights.clone()
        plus[b, t] += h
        minus[b, t] -= h
        fd = (reference_step(lm, output, inner, outer, ids, candidates, plus, cfg)
              - reference_step(lm, output, inner, outer, ids, candidates, minus, cfg)) / (2 * h)
        exact = float(result.grad[b, t])
        print(f"{output} {cfg.optimizer} K={cfg.steps} w[{b},{t}]: exact {exact:+.10e} fd {fd:+.10e}")
        assert abs(exact - fd) <= 1e-6 * abs(exact) + 1e-12
    assert float(result.grad.abs().max()) > 1e-8


def test_fd_backend_estimates_the_exact_hypergradient(lm, data):
    output, ids, candidates, inner, outer, weights = data
    cfg = InnerConfig(steps=1, lr=0.1)
    exact = hypergradient(lm, inner, weights, outer, cfg, backend="func").grad
    estimate = hypergradient(lm, inner, weights, outer, cfg, backend="fd").grad
    cos = float(F.cosine_similarity(estimate.flatten(), exact.flatten(), dim=0))
    err = float((estimate - exact).norm() / exact.norm())
    print(f"{output}: fd vs func cosine {cos:.8f}, relative error {err:.2e}")
    assert cos > 0.999 and err < 0.02
    assert torch.all(estimate[~candidates] == 0)


def test_higher_agrees_with_func(lm, data):
    _, _, _, inner, outer, weights = data
    cfg = InnerConfig(steps=2, lr=0.3)
    f = hypergradient(lm, inner, weights, outer, cfg, backend="func").grad
    h = hypergradient(lm, inner, weights, outer, cfg, backend="higher").grad
    assert float((f - h).norm() / f.norm()) < 1e-9


def test_bad_inputs(lm, data, tokenizer):
    _, ids, candidates, inner, outer, weights = data
    with pytest.raises(DataError, match="weights shape"):
        hypergradient(lm, inner, weights[:, :-1], outer, InnerConfig())
    with pytest.raises(ConfigError, match="masked LMs only"):
        hypergradient(lm, inner, weights, outer, InnerConfig(), input_mask=candidates.double())
    with pytest.raises(ConfigError, match="unknown output format"):
        meta_collator(tokenizer, "sentence", lm)
    with pytest.raises(ConfigError, match="needs the model"):
        meta_collator(tokenizer, "full", None)
    empty = seq2seq_inner_batch(meta_collator(tokenizer, "full", lm), ids, torch.ones_like(ids),
                                torch.zeros_like(candidates))
    with pytest.raises(DataError, match="no labelled positions"):
        hypergradient(lm, empty, weights, outer, InnerConfig())
