"""The policy contract, run automatically for every registered policy.

A new policy that registers itself is picked up here; if it cannot be built with default
options, add a factory to ``FACTORIES``.
"""
from __future__ import annotations

import pytest
import torch

from maskpolicy.policies import Masker, MaskingConfig, available_policies, get_policy, mask_budget


def _pmi(tokenizer, sentences):
    from maskpolicy.policies.pmi_table import build_pmi_table

    enc = tokenizer(sentences)
    word_ids = [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(sentences))]
    vocab = get_policy("random", tokenizer).vocab
    table = build_pmi_table(enc["input_ids"], word_ids, vocab, min_count=3)
    return get_policy("pmi", tokenizer, table=table)


FACTORIES = {"pmi": _pmi}


def make_policy(name, tokenizer, sentences):
    if name in FACTORIES:
        return FACTORIES[name](tokenizer, sentences)
    return get_policy(name, tokenizer)


def _with_spans(batch):
    """Add gold spans on a few words (span ids per row, -1 elsewhere), as a task would."""
    span_ids = torch.full_like(batch["input_ids"], -1)
    for b in range(0, batch["input_ids"].shape[0], 2):  # every other row has spans
        w = batch["word_ids"][b]
        span_ids[b][(w == 1) | (w == 2)] = 0
        span_ids[b][w == 4] = 1
    return {**batch, "span_ids": span_ids}


POLICIES = available_policies()


def test_registry_has_the_foundation_policies():
    assert {"random", "whole_word", "span", "salient_span", "pmi"} <= set(POLICIES)


@pytest.fixture(params=POLICIES)
def policy(request, tokenizer, sentences):
    return make_policy(request.param, tokenizer, sentences)


@pytest.mark.parametrize("spans", [False, True])
def test_probabilities_shape_range_and_zero_at_special_and_padding(policy, batch, spans):
    b = _with_spans(batch) if spans else batch
    probs = policy(b["input_ids"], b["attention_mask"], **{k: v for k, v in b.items() if k not in ("input_ids", "attention_mask")})
    assert probs.shape == b["input_ids"].shape and probs.is_floating_point()
    assert torch.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    special = torch.isin(b["input_ids"], policy.special_ids) | (b["attention_mask"] == 0)
    assert (probs[special] == 0).all()
    assert (probs[~special] > 0).any()  # a policy that masks nothing is useless


@pytest.mark.parametrize("spans", [False, True])
@pytest.mark.parametrize("rate", [0.15, 0.4])
def test_exact_budget_and_whole_units(policy, batch, spans, rate):
    b = _with_spans(batch) if spans else batch
    extras = {k: v for k, v in b.items() if k not in ("input_ids", "attention_mask")}
    # The exact budget is what "ranking" (and "random") fill draws; the default "none" masks the
    # policy's selected tokens only: never more than the budget (checked below), possibly fewer.
    masker = Masker(policy, MaskingConfig(rate=rate, fill="ranking"))
    mask, _ = masker.select(b["input_ids"], b["attention_mask"], torch.Generator().manual_seed(0), **extras)
    maskable = policy.maskable(b["input_ids"], b["attention_mask"])
    k = mask_budget(maskable, rate)
    lean, probs = Masker(policy, MaskingConfig(rate=rate)).select(b["input_ids"], b["attention_mask"],
                                                                 torch.Generator().manual_seed(0), **extras)
    assert not (lean & (probs < 0.5)).any()  # "none": selected tokens only
    assert not (mask & ~maskable).any()
    got = mask.sum(1)
    units = policy.units(b["input_ids"], b["attention_mask"], generator=torch.Generator().manual_seed(0), **extras)
    if units is None:
        assert torch.equal(got, k)  # token-level: exactly round(rate * maskable)
        return
    assert (got >= 1).all()
    for row in range(mask.shape[0]):
        u = units[row]
        sizes = {}
        for unit in u[maskable[row]].unique().tolist():
            members = mask[row][u == unit]
            assert members.all() or not members.any(), f"unit {unit} of row {row} split by the mask"
            sizes[unit] = (int(members.numel()), bool(members.all()))
        if got[row] > k[row]:  # only allowed when the single chosen unit is larger than the budget
            assert sum(taken for _, taken in sizes.values()) == 1
        else:  # greedy take-if-fits: what is left of the budget fits no remaining unit
            left = int(k[row] - got[row])
            untaken = [n for n, taken in sizes.values() if not taken]
            assert left == 0 or not untaken or left < min(untaken)


def test_same_seed_same_mask_and_deterministic_mode(policy, batch):
    extras = {"word_ids": batch["word_ids"]}
    masker = Masker(policy, MaskingConfig(rate=0.2, fill="ranking"))
    a, _ = masker.select(batch["input_ids"], batch["attention_mask"], torch.Generator().manual_seed(7), **extras)
    b, _ = masker.select(batch["input_ids"], batch["attention_mask"], torch.Generator().manual_seed(7), **extras)
    c, _ = masker.select(batch["input_ids"], batch["attention_mask"], torch.Generator().manual_seed(8), **extras)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    det = Masker(policy, MaskingConfig(rate=0.2, deterministic=True, fill="ranking"))
    d1, _ = det.select(batch["input_ids"], batch["attention_mask"], torch.Generator().manual_seed(1), **extras)
    d2, _ = det.select(batch["input_ids"], batch["attention_mask"], torch.Generator().manual_seed(1), **extras)
    assert torch.equal(d1, d2)


def test_corrupted_batch_keeps_model_keys_only(policy, batch):
    out = Masker(policy)(dict(batch), generator=torch.Generator().manual_seed(0))
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    masked = out["labels"] != -100
    assert torch.equal(out["labels"][masked], batch["input_ids"][masked])
    assert torch.equal(out["input_ids"][~masked], batch["input_ids"][~masked])
