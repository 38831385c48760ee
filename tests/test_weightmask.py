"""Weight masking: the straight-through mask, its training, packed artifacts, the baked
export, the many-tasks bank and the interpolation line (train/weightmask, train/methods)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BartConfig, BartForConditionalGeneration, DistilBertConfig, DistilBertForMaskedLM

from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.train.adapt import evaluate_task_model, train_loader, train_task_model
from maskpolicy.train.finetune_run import export_baked
from maskpolicy.train.methods import get_method
from maskpolicy.train.models import load_masked_lm
from maskpolicy.train.task_models import build_task_model
from maskpolicy.train.weightmask import (WeightMaskConfig, apply_adapter, attach_score_masks, current_masks,
                                         load_adapted, masked_layers, masked_share, matching_linears, pack_bits,
                                         save_adapter, unpack_bits)
from maskpolicy.train.weightmask.bank import MaskBank
from maskpolicy.train.weightmask.interpolate import interpolate_accuracy
from maskpolicy.train.weightmask.straight_through import ScoreMask


def _adapt(lm, task, tok, method="mask", epochs=5, seed=0, tm=None, **mask):
    """Train ``method`` on the toy task; returns the task model."""
    torch.manual_seed(seed)
    tm = tm or build_task_model(lm, task)
    options = {"train_head": False, "score_learning_rate": 1e-2, **mask}
    groups = get_method(method).prepare(tm, learning_rate=1e-3, head_learning_rate=1e-3,
                                        mask=WeightMaskConfig(**options), seed=seed)
    loader = train_loader(tm, tok, task, max_length=32, batch_size=32, max_train_examples=None, seed=seed)
    train_task_model(tm, groups, loader, epochs=epochs)
    return tm


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    return load_masked_lm(tiny_lm_dir)


def test_straight_through_gradient_is_masked_weight_gradient_times_weight():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    weight = layer.weight.detach().clone()
    scores = torch.rand(4, 6, dtype=torch.float64) * 0.02
    torch.nn.utils.parametrize.register_parametrization(layer, "weight", ScoreMask(scores.clone(), 0.01))
    x = torch.randn(3, 6, dtype=torch.float64)
    target = torch.randn(3, 4, dtype=torch.float64)
    ((layer(x) - target) ** 2).sum().backward()
    got = layer.parametrizations.weight[0].scores.grad
    # Reference: the same loss with the masked weight as an explicit leaf tensor.
    keep = (scores > 0.01).double()
    masked = (weight * keep).requires_grad_(True)
    ((x @ masked.T + layer.bias.detach() - target) ** 2).sum().backward()
    assert torch.allclose(got, masked.grad * weight, rtol=1e-12, atol=1e-12)
    assert keep.min() == 0 and keep.max() == 1  # both kinds of entries were checked


def test_default_pattern_finds_attention_and_feed_forward_layers(lm):
    names = list(matching_linears(lm, WeightMaskConfig().pattern))
    assert len(names) == 6 * lm.config.num_hidden_layers
    assert all(".encoder.layer." in n for n in names) and not any("cls." in n or "pooler" in n for n in names)
    clf = build_task_model(lm, _stub_task()).model
    assert list(matching_linears(clf, WeightMaskConfig().pattern)) == names  # classifier / pooler stay out
    distil = DistilBertForMaskedLM(DistilBertConfig(vocab_size=50, dim=32, hidden_dim=64, n_layers=2, n_heads=2))
    assert len(matching_linears(distil, WeightMaskConfig().pattern)) == 12
    bart = BartForConditionalGeneration(BartConfig(vocab_size=50, d_model=32, encoder_layers=1, decoder_layers=1,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=64, decoder_ffn_dim=64))
    assert len(matching_linears(bart, WeightMaskConfig().pattern)) == 6 + 10  # encoder; decoder with cross-attention


def _stub_task():
    from maskpolicy.tasks.base import LabeledText, Task

    return Task("stub", "classification", corpus=[], train=[LabeledText("a", 0)], eval=[LabeledText("b", 1)])


def test_pattern_matching_no_layer_is_refused(lm):
    with pytest.raises(ConfigError, match="matches no linear layer"):
        attach_score_masks(lm, WeightMaskConfig(pattern=r"nothing\.here"))


@pytest.mark.parametrize("options, message", [
    ({"tau": 0}, "tau"), ({"tau": 1.5}, "tau"), ({"initial_sparsity": 1}, "initial_sparsity"),
    ({"initial_sparsity": -0.1}, "initial_sparsity"), ({"score_learning_rate": 0}, "score_learning_rate"),
    ({"score_learning_rate": 2}, "score_learning_rate"), ({"pattern": "("}, "not a regular expression"),
    ({"pattern": ""}, "non-empty"), ({"init_width": 0}, "init_width"), ({"tau": "x"}, "tau")])
def test_bad_mask_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        WeightMaskConfig(**options)


@pytest.mark.parametrize("sparsity", [0.05, 0.3])
def test_initial_sparsity(lm, sparsity):
    tm = build_task_model(lm, _stub_task())
    attach_score_masks(tm.model, WeightMaskConfig(initial_sparsity=sparsity), seed=3)
    share = masked_share(tm.model)
    assert share["overall"] == pytest.approx(sparsity, abs=0.005)
    assert all(abs(v - sparsity) < 0.03 for v in share["per_layer"].values())


def test_mask_training_learns_keeps_base_bit_identical_and_mask_binary(lm, toy_classification):
    task, tok = toy_classification
    tm = build_task_model(lm, task)
    before = {k: v.clone() for k, v in tm.model.state_dict().items()}
    tm = _adapt(lm, task, tok, tm=tm)  # only the mask trains (frozen random head)
    accuracy = evaluate_task_model(tm, tok, task, max_length=32)["accuracy"]
    assert accuracy > 0.75  # a random tiny BERT, masked only: measured 0.955; chance is 0.5
    state = tm.model.state_dict()
    for name, tensor in before.items():  # every base tensor (and the frozen head) bit-identical
        original = name.replace(".weight", ".parametrizations.weight.original")
        key = original if original in state else name
        assert torch.equal(state[key], tensor), name
    modules = dict(tm.model.named_modules())
    for layer, keep in current_masks(tm.model).items():
        module = modules[layer]
        original = module.parametrizations.weight.original
        assert torch.equal(module.weight, original * keep)  # exactly W or 0 at every entry
        assert torch.equal(module.weight[~keep], torch.zeros_like(module.weight[~keep]))
    assert masked_share(tm.model)["overall"] != pytest.approx(0.05, abs=1e-4)  # the mask moved


def test_head_only_on_a_random_body_stays_near_chance(lm, toy_classification):
    task, tok = toy_classification
    tm = _adapt(lm, task, tok, method="head")
    assert evaluate_task_model(tm, tok, task, max_length=32)["accuracy"] < 0.65  # measured 0.475


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 5), (17, 9)])
def test_pack_bits_round_trip_and_numpy_layout(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(1)) > 0.4
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_bits(packed, shape), mask)
    assert np.array_equal(packed.numpy(), np.packbits(mask.numpy().reshape(-1)))  # an independent packer


@pytest.fixture(scope="module")
def trained(lm, toy_classification, tmp_path_factory):
    """A mask adapter (mask and head trained), saved; and its task model."""
    task, tok = toy_classification
    tm = _adapt(lm, task, tok, epochs=2, train_head=True)
    directory = str(tmp_path_factory.mktemp("adapter") / "adapter")
    facts = {"name": "toy", "kind": "classification", "label_names": ["neg", "pos"], "num_labels": 2}
    return tm, directory, save_adapter(directory, method="mask", task_model=tm, base_model="unused",
                                       task=facts, tau=0.01, pattern=WeightMaskConfig().pattern)


def test_saved_adapter_reloads_exactly_and_is_small(lm, trained, tiny_lm_dir):
    tm, directory, sizes = trained
    loaded, _ = load_adapted(directory, base=tiny_lm_dir)
    x = torch.randint(5, 50, (4, 20))
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=x).logits, tm.model.eval()(input_ids=x).logits)
    assert all(torch.equal(current_masks(loaded.model)[k], v) for k, v in current_masks(tm.model).items())
    weights = masked_share(tm.model)["masked_weights"]
    with open(os.path.join(directory, "mask.safetensors"), "rb") as f:
        header = 8 + int.from_bytes(f.read(8), "little")  # safetensors: u64 length, then the JSON header
    assert sizes["mask.safetensors"] - header == weights * 4 // 32  # the bits: 1/32 of the fp32 weights
    assert header < 120 * len(current_masks(tm.model))  # names, shapes and offsets of the layers


def test_adapter_refuses_another_base(lm, trained, tmp_path):
    _, directory, _ = trained
    other = load_masked_lm(changed_base(lm, tmp_path))
    task_model = build_task_model(other, _stub_task(), num_labels=2)
    with pytest.raises(ArtifactError, match="another base model"):
        apply_adapter(task_model, directory)


def changed_base(lm, tmp_path) -> str:
    """The same architecture with one body weight changed by one ulp."""
    import copy

    changed = copy.deepcopy(lm)
    with torch.no_grad():
        w = changed.bert.encoder.layer[0].attention.self.query.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(1.0))
    changed.save_pretrained(tmp_path / "other")
    return str(tmp_path / "other")


@pytest.mark.parametrize("damage, message", [
    ("remove mask", "mask.safetensors is missing"), ("truncate mask", "corrupt"), ("bad json", "not readable JSON"),
    ("wrong shape", "does not hold"), ("remove config", "not a maskpolicy adapter"), ("other format", "format")])
def test_damaged_adapters_give_clear_errors(trained, tiny_lm_dir, tmp_path, damage, message):
    import shutil

    _, directory, _ = trained
    copy_dir = str(tmp_path / "adapter")
    shutil.copytree(directory, copy_dir)
    mask, config = os.path.join(copy_dir, "mask.safetensors"), os.path.join(copy_dir, "adapter_config.json")
    data = json.loads(open(config).read())
    if damage == "remove mask":
        os.remove(mask)
    elif damage == "truncate mask":
        open(mask, "r+b").truncate(100)
    elif damage == "bad json":
        open(config, "w").write("{")
    elif damage == "wrong shape":
        first = sorted(data["masked_layers"])[0]
        data["masked_layers"][first] = [7, 7]
        open(config, "w").write(json.dumps(data))
    elif damage == "remove config":
        os.remove(config)
    else:
        data["format"] = "something-else"
        open(config, "w").write(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        load_adapted(copy_dir, base=tiny_lm_dir)


def test_baked_model_equals_masked_model_and_loads_without_maskpolicy(trained, toy_classification, tmp_path):
    tm, _, _ = trained
    _, tok = toy_classification
    export_baked(tm, tok, str(tmp_path / "baked"))
    x = torch.randint(5, 50, (3, 16))
    with torch.no_grad():
        expected = tm.model.eval()(input_ids=x).logits
    torch.save(x, tmp_path / "x.pt")
    # A fresh interpreter in which maskpolicy cannot be imported: plain transformers only.
    code = ("import sys; sys.modules['maskpolicy'] = None\n"
            "import torch; from transformers import AutoModelForSequenceClassification as A\n"
            f"m = A.from_pretrained({str(tmp_path / 'baked')!r}).eval()\n"
            f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
            f"torch.save(m(input_ids=x).logits.detach(), {str(tmp_path / 'y.pt')!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)
    saved = json.loads((tmp_path / "baked" / "config.json").read_text())
    assert saved["architectures"] == ["BertForSequenceClassification"]


def test_bank_serves_each_task_with_its_own_logits_without_copying_the_base(lm, toy_classification, tiny_lm_dir, tmp_path):
    task, tok = toy_classification
    facts = {"name": "toy", "kind": "classification", "label_names": ["neg", "pos"], "num_labels": 2}
    adapters = {}
    for name, method, seed in [("a", "mask", 0), ("b", "mask", 1), ("c", "head", 2)]:
        tm = _adapt(lm, task, tok, method=method, epochs=1, seed=seed, train_head=True)
        adapters[name] = str(tmp_path / name)
        save_adapter(adapters[name], method=method, task_model=tm, base_model=tiny_lm_dir, task=facts)
    bank = MaskBank.from_adapters(adapters)
    base_weight = bank.model.bert.encoder.layer[0].attention.self.query.parametrizations.weight.original
    pointer = base_weight.data_ptr()
    x = torch.randint(5, 50, (4, 20))
    outputs = {}
    for name in ["a", "c", "b", "a", "c"]:  # switching back and forth, per batch
        own, _ = load_adapted(adapters[name])
        with torch.no_grad():
            expected = own.model(input_ids=x).logits
        got = bank(name, input_ids=x).logits
        assert torch.equal(got, expected), name
        outputs[name] = got
    assert not torch.equal(outputs["a"], outputs["b"])
    assert base_weight.data_ptr() == pointer  # one base, never copied
    memory = bank.memory_bytes()
    weights = masked_share(_masked_probe(lm))["masked_weights"]
    assert memory["masks"] == 2 * weights // 8  # two tasks with masks, 1 bit per weight each
    with pytest.raises(ConfigError, match="not in the bank"):
        bank("zzz", input_ids=x)


def _masked_probe(lm):
    tm = build_task_model(lm, _stub_task())
    attach_score_masks(tm.model, WeightMaskConfig())
    return tm.model


def test_interpolation_endpoints_are_the_two_models(lm, trained, toy_classification):
    task, tok = toy_classification
    masked, _, _ = trained
    full = _adapt(lm, task, tok, method="full", epochs=1)

    def score(model):
        return evaluate_task_model(type(masked)(model=model, kind="classification", head=[], base_fingerprint=""), tok,
                                   task, max_length=32)["accuracy"]

    rows = interpolate_accuracy(masked.model, full.model, score, points=11)
    assert [r["alpha"] for r in rows] == pytest.approx([i / 10 for i in range(11)])
    assert rows[0]["score"] == evaluate_task_model(masked, tok, task, max_length=32)["accuracy"]
    assert rows[-1]["score"] == evaluate_task_model(full, tok, task, max_length=32)["accuracy"]
    assert masked_layers(masked.model)  # the masked model itself was left parametrised


def test_a_masked_seq2seq_model_still_generates_and_saves_like_its_baked_copy(tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from maskpolicy.train.weightmask import baked_copy

    torch.manual_seed(0)
    bart = BartForConditionalGeneration(BartConfig(vocab_size=60, d_model=32, encoder_layers=1, decoder_layers=1,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64))
    attach_score_masks(bart, WeightMaskConfig(initial_sparsity=0.3), seed=0)
    bart.eval()
    assert type(bart).__name__ == "BartForConditionalGeneration"  # the class is unchanged
    x = torch.randint(4, 60, (2, 9))
    with torch.no_grad():
        masked_out = bart.generate(input_ids=x, max_new_tokens=6, num_beams=2, do_sample=False)
    baked = baked_copy(bart)
    baked.save_pretrained(tmp_path / "baked")
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "baked").eval()
    with torch.no_grad():
        assert torch.equal(reloaded.generate(input_ids=x, max_new_tokens=6, num_beams=2, do_sample=False), masked_out)
        assert torch.equal(reloaded(input_ids=x, decoder_input_ids=x).logits, bart(input_ids=x, decoder_input_ids=x).logits)
