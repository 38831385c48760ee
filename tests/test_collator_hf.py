"""MaskingCollator next to transformers.DataCollatorForLanguageModeling, on the same inputs.

Deterministic behaviour (keys, shapes, dtypes, padding, -100 placement, mlm=False labels)
is compared exactly; random behaviour (masked share, 80/10/10 split, whole words) by
statistics with tolerances. Deliberate differences are listed in MaskingCollator's docstring.
"""
from __future__ import annotations

import copy
import warnings

import datasets
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (BertConfig, BertForPreTraining, DataCollatorForLanguageModeling, PreTrainedTokenizerFast,
                          Trainer, TrainingArguments)

from maskpolicy.policies import ConfigError, MaskingCollator
from maskpolicy.policies.collate_io import word_ids_from_offsets

HF = DataCollatorForLanguageModeling


def _hf(tokenizer, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HF(tokenizer, **kwargs)


def _ours(tokenizer, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MaskingCollator(tokenizer, *args, **kwargs)


@pytest.fixture(scope="module")
def ids(tokenizer, sentences):
    return tokenizer(sentences[:256])["input_ids"]


def _special(tokenizer) -> torch.Tensor:
    return torch.tensor(tokenizer.all_special_ids)


def _originals(out) -> torch.Tensor:
    return torch.where(out["labels"] != -100, out["labels"], out["input_ids"])


def _describe(batch) -> dict:
    """key -> (array type, dtype as a string, shape): what must agree exactly."""
    return {k: (type(v).__name__, str(v.dtype).replace("torch.", ""), tuple(v.shape)) for k, v in batch.items()}


def _split(out, tokenizer) -> np.ndarray:
    """[masked, maskable, [MASK], random, unchanged] counts of one batch."""
    out = {k: torch.as_tensor(v) for k, v in out.items()}
    sel = out["labels"] != -100
    maskable = (out["attention_mask"] == 1) & ~torch.isin(_originals(out), _special(tokenizer))
    got, want = out["input_ids"][sel], out["labels"][sel]
    mask = got == tokenizer.mask_token_id
    return np.array([int(sel.sum()), int(maskable.sum()), int(mask.sum()), int((~mask & (got != want)).sum()),
                     int((got == want).sum())])


# ---- return_tensors ------------------------------------------------------------------
def test_return_tensors_np_and_pt_at_construction_and_call(tokenizer, ids):
    feats = [{"input_ids": x, "token_type_ids": [0] * len(x), "next_sentence_label": i % 2, "score": 0.5,
              "flag": True} for i, x in enumerate(ids[:8])]
    for build, call in (("np", None), ("pt", "np"), ("np", "pt"), ("pt", None)):
        ours = _ours(tokenizer, seed=0, return_tensors=build)(feats, return_tensors=call)
        hf = _hf(tokenizer, seed=0, return_tensors=build)(feats, return_tensors=call)
        assert _describe(ours) == _describe(hf), (build, call)
        assert np.array_equal(np.asarray(ours["attention_mask"]), np.asarray(hf["attention_mask"]))
        assert np.array_equal(np.asarray(ours["next_sentence_label"]), np.asarray(hf["next_sentence_label"]))
    bare = [np.array(x) for x in ids[:8]]
    assert _describe(_ours(tokenizer, mlm=False)(bare, return_tensors="np"))["labels"] == \
        _describe(_hf(tokenizer, mlm=False)(bare, return_tensors="np"))["labels"]
    with pytest.raises(ConfigError, match="return_tensors"):
        MaskingCollator(tokenizer, return_tensors="tf")
    with pytest.raises(ConfigError, match="return_tensors"):
        MaskingCollator(tokenizer)(feats, return_tensors="tf")
    with pytest.raises(ValueError):  # HF: at call time
        _hf(tokenizer)(feats, return_tensors="tf")


# ---- rows with nothing to mask -----------------------------------------------------------
def test_rows_with_nothing_to_mask_get_all_minus_100(tokenizer, ids):
    empty_line = tokenizer("")["input_ids"]  # [CLS] [SEP]
    only_special = [tokenizer.cls_token_id, tokenizer.mask_token_id, tokenizer.sep_token_id]
    feats = [{"input_ids": x} for x in (ids[0], empty_line, only_special, [], ids[1])]
    for fmt in ("pt", "np"):
        ours = _ours(tokenizer, seed=0)(feats, return_tensors=fmt)
        hf = _hf(tokenizer, seed=0)(feats, return_tensors=fmt)
        assert _describe(ours) == _describe(hf)
        assert np.array_equal(ours["attention_mask"], hf["attention_mask"])
        for row in (1, 2, 3):  # nothing maskable: untouched inputs (padding included), all -100
            assert np.array_equal(ours["input_ids"][row], hf["input_ids"][row])
            assert (ours["labels"][row] == -100).all() and (hf["labels"][row] == -100).all()
        assert (ours["labels"][[0, 4]] != -100).any(1).all()  # the budget still holds elsewhere
    # All rows empty: HF gives [B, 0] tensors, dicts and bare lists alike.
    for feats in ([{"input_ids": []}] * 2, [[], []]):
        assert _describe(_ours(tokenizer, seed=0)(feats)).items() >= _describe(_hf(tokenizer, seed=0)(feats)).items()
        assert _ours(tokenizer)(feats)["labels"].shape == (2, 0)


# ---- keys the collator does not know ---------------------------------------------------
def test_unknown_keys_pass_through_like_hf(tokenizer, ids):
    feats = [{"input_ids": x, "next_sentence_label": i % 2, "sentence_order_label": 1 - i % 2, "label": 3,
              "weight": 0.25, "vec": np.ones(3, dtype=np.float32)} for i, x in enumerate(ids[:6])]
    for fmt in ("pt", "np"):
        ours = _ours(tokenizer, seed=0)(feats, return_tensors=fmt)
        hf = _hf(tokenizer, seed=0)(feats, return_tensors=fmt)
        assert _describe(ours) == _describe(hf)
        for key in ("next_sentence_label", "sentence_order_label", "label", "weight", "vec"):
            assert np.array_equal(np.asarray(ours[key]), np.asarray(hf[key])), key
    # Strings: HF raises with "pt" and returns an array with "np"; we drop them with "pt".
    texts = [{"input_ids": x, "text": "hi"} for x in ids[:4]]
    with pytest.raises(ValueError):
        _hf(tokenizer)(texts)
    assert "text" not in _ours(tokenizer)(texts)
    assert np.array_equal(_ours(tokenizer)(texts, return_tensors="np")["text"],
                          _hf(tokenizer)(texts, return_tensors="np")["text"])
    # Per-token keys we do not know are policy extras: padded, consumed, not returned.
    extras = [{"input_ids": x, "word_ids": list(range(len(x)))} for x in ids[:4]]
    assert set(_ours(tokenizer, "whole_word", seed=0)(extras)) == {"input_ids", "attention_mask", "labels"}


@pytest.mark.parametrize("kind", ["list", "numpy", "torch"])
def test_lists_numpy_and_tensors_collate_like_hf(tokenizer, sentences, kind):
    convert = {"list": list, "numpy": np.asarray, "torch": torch.tensor}[kind]
    enc = [tokenizer(s, return_special_tokens_mask=True, return_token_type_ids=True) for s in sentences[:6]]
    assert "token_type_ids" in enc[0]
    feats = [{k: convert(v) for k, v in e.items()} for e in enc]
    bare = [convert(e["input_ids"]) for e in enc]
    for examples in (feats, bare):
        ours, hf = _ours(tokenizer, mlm=False)(examples), _hf(tokenizer, mlm=False)(examples)
        for key in hf:  # token_type_ids kept; special_tokens_mask used and dropped, as in HF
            assert torch.equal(ours[key], hf[key]), (kind, key)
        extra = set(ours) - set(hf)
        assert extra == (set() if examples is feats else {"attention_mask"})  # documented difference


def test_bert_for_pretraining_gets_nsp_labels(tokenizer, sentences):
    pairs = [tokenizer(a, b, return_token_type_ids=True) for a, b in zip(sentences[:8], sentences[8:16])]
    feats = [dict(p, next_sentence_label=i % 2) for i, p in enumerate(pairs)]
    batch = MaskingCollator(tokenizer, seed=0)(feats)
    assert torch.equal(batch["next_sentence_label"], torch.tensor([i % 2 for i in range(8)]))
    assert torch.equal(batch["token_type_ids"], _hf(tokenizer, seed=0)(feats)["token_type_ids"])
    model = BertForPreTraining(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=64))
    assert torch.isfinite(model(**batch).loss)


# ---- tokenizers without a pad or a mask token ------------------------------------------
def test_tokenizer_without_pad_token(tokenizer, ids):
    nopad = copy.deepcopy(tokenizer)
    nopad.pad_token = None
    same = [x[:6] for x in ids[:4]]
    collate = MaskingCollator(nopad, seed=0)  # accepted: only padding needs the pad token
    out = collate([{"input_ids": x} for x in same])
    assert out["input_ids"].shape == (4, 6) and ((out["labels"] != -100).sum(1) >= 1).all()
    causal = MaskingCollator(nopad, mlm=False)(same)
    assert torch.equal(causal["labels"], _hf(nopad, mlm=False)(same)["labels"])  # no pad id: labels = inputs
    for call in (lambda c: c(ids[:4]), lambda c: c([{"input_ids": x} for x in ids[:4]])):
        with pytest.raises(ConfigError, match="no pad token"):
            call(collate)
        with pytest.raises(ValueError, match="pad"):
            call(_hf(nopad))
    with pytest.raises(ConfigError, match="no pad token"):  # padding to a multiple needs it too
        MaskingCollator(nopad, pad_to_multiple_of=8)(same)
    with pytest.raises(ValueError, match="pad"):
        _hf(nopad, pad_to_multiple_of=8)(same)


def test_mlm_false_labels_match_hf_exactly(tokenizer, ids):
    nomask = copy.deepcopy(tokenizer)
    nomask.mask_token = None
    with pytest.raises(ValueError, match="mask token"):
        _hf(nomask)
    with pytest.raises(ConfigError, match="mask token"):
        MaskingCollator(nomask)
    eos_pad = copy.deepcopy(tokenizer)
    eos_pad.pad_token = eos_pad.sep_token  # a causal set-up: pad = end of text
    feats = [{"input_ids": x, "labels": [7] * 3} for x in ids[:6]]  # incoming labels are overwritten
    for tok in (nomask, eos_pad):
        for side in ("right", "left"):
            tok.padding_side = side
            for fmt in ("pt", "np"):
                ours = MaskingCollator(tok, mlm=False, pad_to_multiple_of=8)(feats, return_tensors=fmt)
                hf = _hf(tok, mlm=False, pad_to_multiple_of=8)([{"input_ids": f["input_ids"]} for f in feats],
                                                               return_tensors=fmt)
                assert _describe(ours) == _describe(hf)
                for key in hf:  # HF hides every pad-id token, the real [SEP] = pad included
                    assert np.array_equal(ours[key], hf[key]), (side, key)
    with pytest.raises(ConfigError, match="mlm=True"):
        MaskingCollator(tokenizer, mlm=False, whole_word_mask=True)
    with pytest.raises(ValueError, match="mlm=True"):
        _hf(tokenizer, mlm=False, whole_word_mask=True)


# ---- replacement vocabulary ---------------------------------------------------------------
def test_vocabulary_without_ordinary_tokens_is_refused_at_construction():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordLevel({s: i for i, s in enumerate(specials)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    only_special = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                           cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    _hf(only_special)  # HF accepts: it draws random replacements from special tokens too
    with pytest.raises(ConfigError, match="random replacement"):
        MaskingCollator(only_special)
    MaskingCollator(only_special, random_replace_prob=0.0)  # nothing to draw: fine
    MaskingCollator(only_special, mlm=False)


# ---- labels in the inputs --------------------------------------------------------------------
def test_labels_field_is_overwritten(tokenizer, ids):
    scalar = [{"input_ids": x, "labels": 1} for x in ids[:8]]
    ragged = [{"input_ids": x, "labels": [5] * (i + 1)} for i, x in enumerate(ids[:8])]
    ours, hf = _ours(tokenizer, seed=0)(scalar), _hf(tokenizer, seed=0)(scalar)
    assert _describe(ours) == _describe(hf)
    assert ((ours["labels"] == -100) | (ours["labels"] == _originals(ours))).all()
    with pytest.raises(ValueError):  # HF cannot tensorise ragged labels before overwriting them
        _hf(tokenizer)(ragged)
    assert torch.equal(_ours(tokenizer, seed=0)(ragged)["labels"], _ours(tokenizer, seed=0)(scalar)["labels"])
    causal, hf_causal = MaskingCollator(tokenizer, mlm=False)(scalar), _hf(tokenizer, mlm=False)(scalar)
    assert torch.equal(causal["labels"], hf_causal["labels"])


# ---- masking statistics --------------------------------------------------------------------
@pytest.mark.parametrize("rate,m,r", [(0.15, 0.8, 0.1), (0.3, 0.5, 0.4), (0.2, 0.0, 1.0), (0.15, 1.0, 0.0)])
def test_rates_and_corruption_split_match_hf(tokenizer, ids, rate, m, r):
    feats = [{"input_ids": x} for x in ids]
    totals = {}
    for name, collate in (("ours", _ours(tokenizer, seed=1, mlm_probability=rate, mask_replace_prob=m,
                                         random_replace_prob=r)),
                          ("hf", _hf(tokenizer, seed=1, mlm_probability=rate, mask_replace_prob=m,
                                     random_replace_prob=r))):
        totals[name] = sum(_split(collate(feats[i:i + 64]), tokenizer) for i in range(0, len(feats), 64))
    shares = {}
    for name, (masked, maskable, mask, rnd, same) in totals.items():
        shares[name] = np.array([masked / maskable, mask / masked, rnd / masked, same / masked])
        # A random draw equals the original once in ~|V| = 200: a small bias toward "unchanged".
        assert abs(shares[name][0] - rate) < 0.025, name
        assert np.allclose(shares[name][1:], [m, r, 1 - m - r], atol=0.05), (name, shares[name])
    assert np.allclose(shares["ours"], shares["hf"], atol=0.05), shares


def test_pad_to_multiple_of_and_padding_sides_match_hf(tokenizer, ids):
    for multiple in (None, 1, 8, 13):
        for side in ("right", "left"):
            tokenizer.padding_side = side
            try:
                feats = [{"input_ids": x} for x in ids[:5]]
                ours = _ours(tokenizer, seed=0, pad_to_multiple_of=multiple)(feats)
                hf = _hf(tokenizer, seed=0, pad_to_multiple_of=multiple)(feats)
            finally:
                tokenizer.padding_side = "right"
            assert _describe(ours) == _describe(hf)
            assert torch.equal(ours["attention_mask"], hf["attention_mask"])
            assert torch.equal(_originals(ours), _originals(hf))  # same tokens in the same slots
            assert (ours["labels"][ours["attention_mask"] == 0] == -100).all()


def test_seed_makes_batches_reproducible(tokenizer, ids):
    feats = [{"input_ids": x} for x in ids[:32]]
    for make in (_ours, _hf):
        a, b, c = make(tokenizer, seed=5)(feats), make(tokenizer, seed=5)(feats), make(tokenizer, seed=6)(feats)
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["input_ids"], b["input_ids"])
        assert not torch.equal(a["labels"], c["labels"])


# ---- whole-word masking ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def offset_features(tokenizer, sentences):
    """Pre-padded (HF cannot pad offset_mapping), with "." glued to the previous word so that
    offsets and the "##" marks disagree on what a word is."""
    texts = [s.replace(" .", ".") for s in sentences[:256]]
    enc = tokenizer(texts, padding="max_length", max_length=40, truncation=True, return_offsets_mapping=True)
    return [{"input_ids": a, "attention_mask": m, "offset_mapping": o}
            for a, m, o in zip(enc["input_ids"], enc["attention_mask"], enc["offset_mapping"])]


def _words(tokenizer, feats) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([f["input_ids"] for f in feats])
    maskable = ~torch.isin(ids, _special(tokenizer))
    return ids, word_ids_from_offsets(torch.tensor([f["offset_mapping"] for f in feats]), maskable)


def test_word_grouping_from_offsets_is_hfs(tokenizer, offset_features):
    ids, words = _words(tokenizer, offset_features)
    special = torch.isin(ids, _special(tokenizer)).long().numpy()
    offsets = np.array([f["offset_mapping"] for f in offset_features])
    hf_words, _ = HF._calc_word_ids_and_prob_mask(offsets, special)  # HF numbers words from 1, -1 at specials
    assert np.array_equal(np.where(words.numpy() >= 0, words.numpy() + 1, -1), hf_words)


def _word_stats(out, words: torch.Tensor, mask_id: int) -> np.ndarray:
    """[masked tokens, maskable tokens, whole words masked, words, split words, [MASK] among masked]."""
    sel = out["labels"] != -100
    whole = split = n = 0
    for b in range(words.shape[0]):
        for w in range(int(words[b].max()) + 1):
            m = sel[b][words[b] == w]
            n += 1
            whole += int(m.all())
            split += int(m.any() and not m.all())
    return np.array([int(sel.sum()), int((words >= 0).sum()), whole, n, split,
                     int((out["input_ids"][sel] == mask_id).sum())])


def test_whole_word_mask_matches_hf(tokenizer, offset_features):
    with pytest.warns(UserWarning, match="mask_replace_prob"):
        ours_collate = MaskingCollator(tokenizer, whole_word_mask=True, seed=0)
    with pytest.warns(UserWarning):
        hf_collate = HF(tokenizer, whole_word_mask=True, seed=0)
    assert (ours_collate.mask_replace_prob, ours_collate.random_replace_prob) == \
        (hf_collate.mask_replace_prob, hf_collate.random_replace_prob) == (1.0, 0.0)
    stats = {}
    for name, collate in (("ours", ours_collate), ("hf", hf_collate)):
        total = 0
        for i in range(0, len(offset_features), 64):
            feats = offset_features[i:i + 64]
            out = collate(feats)
            assert "offset_mapping" not in out
            total = total + _word_stats(out, _words(tokenizer, feats)[1], tokenizer.mask_token_id)
        masked, maskable, whole, words, split, mask = total
        assert split == 0, name  # whole words kept whole, by HF's offset grouping
        assert mask == masked, name  # every masked token is [MASK]: HF's 100/0/0, per token and so per word
        stats[name] = np.array([masked / maskable, whole / words])
    assert abs(stats["ours"][0] - 0.15) < 0.02 and abs(stats["hf"][0] - 0.15) < 0.03
    # Our exact token budget is filled with whole words, so it leans a little to short words.
    assert np.allclose(stats["ours"], stats["hf"], atol=0.03), stats


def test_whole_word_mask_pads_offsets_and_whole_word_policy_keeps_80_10_10(tokenizer, offset_features):
    ragged = [{"input_ids": [t for t, m in zip(f["input_ids"], f["attention_mask"]) if m],
               "offset_mapping": [o for o, m in zip(f["offset_mapping"], f["attention_mask"]) if m]}
              for f in offset_features]  # different lengths: HF's tokenizer.pad cannot pad the offsets
    out = _ours(tokenizer, whole_word_mask=True, seed=0)(ragged[:64])
    words = _words(tokenizer, offset_features[:64])[1][:, : out["labels"].shape[1]]
    assert _word_stats(out, words, tokenizer.mask_token_id)[4] == 0
    policy = MaskingCollator(tokenizer, "whole_word", seed=0)  # the policy: its own 80/10/10, per token
    total = sum(_word_stats(policy(offset_features[i:i + 64]), _words(tokenizer, offset_features[i:i + 64])[1],
                            tokenizer.mask_token_id) for i in range(0, 256, 64))
    assert total[4] == 0 and abs(total[5] / total[0] - 0.8) < 0.05
    with pytest.raises(ConfigError, match="whole_word_mask"):
        MaskingCollator(tokenizer, "span", whole_word_mask=True)


# ---- Trainer ------------------------------------------------------------------------------------
def test_trainer_with_nsp_labels(tokenizer, sentences, tmp_path):
    pairs = tokenizer(sentences[:16], sentences[16:32], return_token_type_ids=True)
    data = datasets.Dataset.from_dict({"input_ids": pairs["input_ids"], "token_type_ids": pairs["token_type_ids"],
                                       "next_sentence_label": [i % 2 for i in range(16)]})
    model = BertForPreTraining(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=64))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to=[],
                             use_cpu=True, save_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=MaskingCollator(tokenizer, seed=0))
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
