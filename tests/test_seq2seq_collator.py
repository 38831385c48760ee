"""The seq2seq collator's contract, for every registered policy and both output formats:
the masked positions are the sampler's (exact budget, units whole), each span is one
marker in the encoder input, the target is exactly the masked spans (or the full input),
no sentinel is reused within a sequence; HF's DataCollatorForSeq2Seq conventions."""
from __future__ import annotations

import pytest
import torch
from conftest import build_test_tokenizer, make_sentences, padded_batch
from test_policy_contract import POLICIES, _with_spans, make_policy

from maskpolicy.policies import Masker, MaskingConfig, mask_budget
from maskpolicy.policies.errors import ConfigError
from maskpolicy.policies.seq2seq_collator import Seq2SeqMaskingCollator, sentinel_ids
from maskpolicy.policies.span_corruption import corrupt_spans, reconstruct, spans_of

SENTINELS = [f"<extra_id_{i}>" for i in range(40)]


@pytest.fixture(scope="module")
def sentinel_tokenizer(sentences):
    tok = build_test_tokenizer(sentences)
    tok.add_special_tokens({"additional_special_tokens": SENTINELS})
    return tok


def _features(batch: dict) -> list[dict]:
    """Unpadded examples (input_ids and the policy extras) from a padded batch."""
    rows = []
    for b in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][b].sum())
        rows.append({k: batch[k][b, :n].tolist() for k in batch if k != "attention_mask"})
    return rows


def _unpad(row: torch.Tensor, pad: int) -> list[int]:
    return [t for t in row.tolist() if t != pad]


@pytest.mark.parametrize("corruption", ["mask", "sentinel"])
@pytest.mark.parametrize("output", ["spans", "full"])
@pytest.mark.parametrize("name", POLICIES)
def test_contract_for_every_policy(name, output, corruption, tokenizer, sentinel_tokenizer, sentences):
    tok = sentinel_tokenizer if corruption == "sentinel" else tokenizer
    policy = make_policy(name, tok, sentences)
    batch = _with_spans(padded_batch(tok, sentences[:16]))
    collator = Seq2SeqMaskingCollator(tok, policy, output=output, corruption=corruption, seed=3, fill="ranking",
                                      mlm_probability=0.2)
    out = collator(_features(batch))
    # The same selection straight from the masker (same generator stream): the collator's masks.
    extras = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    masker = Masker(policy, MaskingConfig(rate=0.2, mask_replace_prob=1.0, random_replace_prob=0.0, fill="ranking"),
                    allow_empty_rows=True)
    mask, _ = masker.select(batch["input_ids"], batch["attention_mask"], torch.Generator().manual_seed(3), **extras)
    maskable = policy.maskable(batch["input_ids"], batch["attention_mask"])
    budget = mask_budget(maskable, 0.2)
    marker_ids = set(sentinel_ids(tok)) if corruption == "sentinel" else {tok.mask_token_id}
    for b in range(mask.shape[0]):
        n = int(batch["attention_mask"][b].sum())
        original, row_mask = batch["input_ids"][b, :n].tolist(), mask[b, :n].tolist()
        encoder = _unpad(out["input_ids"][b], tok.pad_token_id)
        target = [t for t in out["labels"][b].tolist() if t != -100]
        spans = spans_of(row_mask)
        assert sum(1 for t in encoder if t in marker_ids) == len(spans)  # one marker per span
        assert len(encoder) == n - sum(e - s for s, e in spans) + len(spans)
        markers = [t for t in encoder if t in marker_ids]
        if corruption == "sentinel":
            assert len(set(markers)) == len(markers)  # no sentinel reused within a sequence
        if output == "full":
            assert target == original
        else:
            assert reconstruct(encoder, target, sorted(marker_ids), tok.sep_token_id) == original
            assert [t for t in target if t not in marker_ids][:-1] == [original[i] for i, m in enumerate(row_mask) if m]
        masked = sum(row_mask)
        if policy.units(batch["input_ids"][b:b + 1], batch["attention_mask"][b:b + 1]) is None:
            assert masked == int(budget[b])  # token-level policies: the exact budget
        else:
            assert masked >= 1
        expected_encoder, _ = corrupt_spans(original, row_mask, markers or [tok.mask_token_id], output=output,
                                            end_id=tok.sep_token_id)
        assert encoder == expected_encoder


def test_hf_conventions_padding_multiple_side_and_decoder_inputs(tokenizer, sentences):
    from transformers import BartConfig, BartForConditionalGeneration

    bart = BartForConditionalGeneration(BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1,
                                                   decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=32, decoder_ffn_dim=32, pad_token_id=tokenizer.pad_token_id,
                                                   decoder_start_token_id=tokenizer.cls_token_id))
    feats = [dict(tokenizer(t), pair_id=i) for i, t in enumerate(sentences[:6])]
    out = Seq2SeqMaskingCollator(tokenizer, "span", output="full", model=bart, pad_to_multiple_of=8, seed=0)(feats)
    assert out["input_ids"].shape[1] % 8 == 0 and out["labels"].shape[1] % 8 == 0
    assert torch.equal(out["pair_id"], torch.arange(6))  # per-example keys pass through
    assert "token_type_ids" not in out  # encoder-decoder models take none
    labels = out["labels"]
    assert (labels[out["labels"] == -100] == -100).all() and (labels == -100).any()
    expected = bart.prepare_decoder_input_ids_from_labels(labels=labels)
    assert torch.equal(out["decoder_input_ids"], expected)
    loss = bart(**{k: v for k, v in out.items() if k != "pair_id"}).loss
    assert torch.isfinite(loss)
    tokenizer.padding_side = "left"
    try:
        left = Seq2SeqMaskingCollator(tokenizer, "random", output="spans", seed=0)(feats)
        assert (left["labels"][:, 0] == -100).any() and (left["attention_mask"][:, -1] == 1).all()
    finally:
        tokenizer.padding_side = "right"
    np_out = Seq2SeqMaskingCollator(tokenizer, "random", return_tensors="np", seed=0)(feats)
    assert type(np_out["labels"]).__module__ == "numpy"


def test_same_seed_same_batch(tokenizer, sentences):
    feats = [tokenizer(t) for t in sentences[:8]]
    a = Seq2SeqMaskingCollator(tokenizer, "span", seed=5)(feats)
    b = Seq2SeqMaskingCollator(tokenizer, "span", seed=5)(feats)
    c = Seq2SeqMaskingCollator(tokenizer, "span", seed=6)(feats)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["input_ids"], c["input_ids"])


def test_bad_input(tokenizer, sentences):
    with pytest.raises(ConfigError, match="unknown output format 'sentence'"):
        Seq2SeqMaskingCollator(tokenizer, output="sentence")
    with pytest.raises(ConfigError, match="needs sentinel tokens"):
        Seq2SeqMaskingCollator(tokenizer, corruption="sentinel")
    with pytest.raises(ConfigError, match="unknown corruption"):
        Seq2SeqMaskingCollator(tokenizer, corruption="drop")
    few = build_test_tokenizer(make_sentences(100))
    few.add_special_tokens({"additional_special_tokens": SENTINELS[:1]})
    feats = [few(t) for t in sentences[:4]]
    with pytest.raises(ConfigError, match="only 1 sentinel tokens"):
        Seq2SeqMaskingCollator(few, "random", mlm_probability=0.5, seed=0)(feats)


def test_maskpolicy_tokenizers_get_sentinels_after_their_ids(sentences, tmp_path):
    from transformers import AutoTokenizer

    from maskpolicy.tasks.tokenizer import with_sentinels

    tok = build_test_tokenizer(sentences)
    before = dict(tok.get_vocab())
    with_sentinels(tok, 10)
    assert len(tok) == len(before) + 10 and all(tok.get_vocab()[t] == i for t, i in before.items())
    assert sentinel_ids(tok) == list(range(len(before), len(before) + 10))
    with_sentinels(tok, 12)  # only the two missing ones are added
    assert len(tok) == len(before) + 12
    assert tok("a <extra_id_3> b")["input_ids"][2] == sentinel_ids(tok)[3]  # one special token in raw text
    tok.save_pretrained(tmp_path)
    assert sentinel_ids(AutoTokenizer.from_pretrained(tmp_path)) == sentinel_ids(tok)
    out = Seq2SeqMaskingCollator(tok, "random", seed=0)([tok(t) for t in sentences[:4]])  # sentinels by default
    assert set(out["labels"][:, 0].tolist()) == {sentinel_ids(tok)[0]}
    with pytest.raises(ConfigError, match="positive integer"):
        with_sentinels(tok, 0)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("output", ["spans", "full"])
def test_corrupt_mask_records_which_position_each_target_token_reconstructs(tokenizer, sentences, output, side):
    """``corrupt_mask(..., sources=True)``: for a given mask, ``target_source`` points every
    reconstructing target token at the position it came from (either padding side); each
    masked position exactly once; markers, end and unmasked copies -1."""
    tokenizer.padding_side = side
    try:
        batch = padded_batch(tokenizer, sentences[:6])
        ids, attention = batch["input_ids"], batch["attention_mask"]
        mask = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(5)) < 0.3) & attention.bool()
        collator = Seq2SeqMaskingCollator(tokenizer, "random", output=output)
        out = collator.corrupt_mask(ids, attention, mask, sources=True)
        assert side == "right" or not bool(attention[:, 0].all())  # really padded on the left
    finally:
        tokenizer.padding_side = "right"
    source, labels = out["target_source"], out["labels"]
    assert source.shape == labels.shape
    for b in range(ids.shape[0]):
        pointed = [(int(s), int(t)) for s, t in zip(source[b], labels[b]) if s >= 0]
        assert sorted(s for s, _ in pointed) == mask[b].nonzero().flatten().tolist()
        assert all(int(ids[b, s]) == t for s, t in pointed)
    assert bool((source[labels == -100] == -1).all())
