"""MaskingCollator as a drop-in for DataCollatorForLanguageModeling."""
from __future__ import annotations

import datasets
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

from maskpolicy.policies import ConfigError, DataError, MaskingCollator


@pytest.fixture(scope="module")
def features(tokenizer, sentences):
    enc = tokenizer(sentences[:256])
    return [{"input_ids": ids} for ids in enc["input_ids"]]


def test_same_keys_padding_and_label_convention_as_hf(tokenizer, features):
    ours = MaskingCollator(tokenizer, seed=0, pad_to_multiple_of=8)(features[:16])
    hf = DataCollatorForLanguageModeling(tokenizer, pad_to_multiple_of=8)(features[:16])
    assert set(ours) == set(hf)
    assert ours["input_ids"].shape == hf["input_ids"].shape and ours["input_ids"].shape[1] % 8 == 0
    assert torch.equal(ours["attention_mask"], hf["attention_mask"])
    unmasked = ours["labels"] == -100
    assert torch.equal(ours["input_ids"][unmasked], hf["labels"].where(hf["labels"] != -100, hf["input_ids"])[unmasked])
    assert (ours["input_ids"][ours["attention_mask"] == 0] == tokenizer.pad_token_id).all()


def test_random_policy_matches_hf_statistics(tokenizer, features):
    """Masked fraction, 80/10/10 split, and (ours only) the exact per-sequence budget."""
    ours = MaskingCollator(tokenizer, "random", seed=0)
    hf = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    mask_id = tokenizer.mask_token_id
    stats = {"ours": [0, 0, 0, 0, 0], "hf": [0, 0, 0, 0, 0]}  # masked, maskable, [MASK], random, unchanged
    for name, collate in (("ours", ours), ("hf", hf)):
        for start in range(0, len(features), 32):
            out = collate(features[start : start + 32])
            original = torch.where(out["labels"] != -100, out["labels"], out["input_ids"])
            maskable = (out["attention_mask"] == 1) & ~torch.isin(original, torch.tensor(tokenizer.all_special_ids))
            sel = out["labels"] != -100
            s = stats[name]
            s[0] += int(sel.sum())
            s[1] += int(maskable.sum())
            s[2] += int((out["input_ids"][sel] == mask_id).sum())
            s[3] += int(((out["input_ids"][sel] != mask_id) & (out["input_ids"][sel] != out["labels"][sel])).sum())
            s[4] += int((out["input_ids"][sel] == out["labels"][sel]).sum())
            if name == "ours":  # exact budget per sequence
                budget = torch.floor(maskable.sum(1).double() * 0.15 + 0.5).clamp(min=1).long()
                assert torch.equal(sel.sum(1), budget)
    for name, (masked, maskable, m, r, u) in stats.items():
        # Rounding the budget per sequence moves our rate by < 0.5 token per sequence.
        assert abs(masked / maskable - 0.15) < 0.02, name
        assert abs(m / masked - 0.8) < 0.03, name
        assert abs(r / masked - 0.1) < 0.025, name  # a random token can equal the original: tiny bias
        assert abs(u / masked - 0.1) < 0.025, name
    ours_rate, hf_rate = stats["ours"][0] / stats["ours"][1], stats["hf"][0] / stats["hf"][1]
    assert abs(ours_rate - hf_rate) < 0.02


def test_special_tokens_are_never_masked_or_used_as_replacement(tokenizer, features):
    out = MaskingCollator(tokenizer, seed=1, mask_replace_prob=0.0, random_replace_prob=1.0)(features[:64])
    sel = out["labels"] != -100
    replaced = out["input_ids"][sel]
    assert not torch.isin(replaced, torch.tensor(tokenizer.all_special_ids)).any()
    assert not torch.isin(out["labels"][sel], torch.tensor(tokenizer.all_special_ids)).any()


def test_extras_are_padded_for_the_policy_and_not_returned(tokenizer, features):
    feats = [dict(f, span_ids=[-1] * (len(f["input_ids"]) - 2) + [0, -1], key="x") for f in features[:8]]
    out = MaskingCollator(tokenizer, "salient_span", seed=0)(feats)
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    assert ((out["labels"] != -100).sum(1) >= 1).all()


def test_whole_word_flag_and_left_padding(tokenizer, features):
    with pytest.warns(UserWarning, match="mask_replace_prob set to 1"):  # as HF: whole words are all [MASK]
        collate = MaskingCollator(tokenizer, whole_word_mask=True, seed=0)
    assert collate.policy.name == "whole_word"
    tokenizer.padding_side = "left"
    try:
        out = MaskingCollator(tokenizer, seed=0)(features[:4])
    finally:
        tokenizer.padding_side = "right"
    assert (out["attention_mask"][:, -1] == 1).all()


def test_plain_dataloader_with_workers_is_reproducible(tokenizer, features):
    def run():
        collate = MaskingCollator(tokenizer, "span", seed=3)
        loader = DataLoader(features[:64], batch_size=16, collate_fn=collate, num_workers=2)
        return [b["labels"] for b in loader]

    a, b = run(), run()
    assert len(a) == 4 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0] != -100, a[2] != -100)


def test_inside_transformers_trainer(tokenizer, sentences, tmp_path):
    enc = tokenizer(sentences[:64])
    word_ids = [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(64)]
    data = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "word_ids": word_ids})
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, report_to=[],
                             remove_unused_columns=False, use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=MaskingCollator(tokenizer, "whole_word", seed=0))
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))


def test_bad_collator_input(tokenizer):
    with pytest.raises(ConfigError, match="return_tensors"):
        MaskingCollator(tokenizer, return_tensors="tf")  # "np" is supported since the HF-parity work
    with pytest.raises(ConfigError, match="pad_to_multiple_of"):
        MaskingCollator(tokenizer, pad_to_multiple_of=0)
    with pytest.raises(DataError, match="empty"):
        MaskingCollator(tokenizer)([])
    with pytest.raises(ConfigError, match="mask rate"):
        MaskingCollator(tokenizer, mlm_probability=1.0)
