"""The learned policy network: shapes, gradients, trainability, save/load and its errors."""
from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import NAMES, build_test_tokenizer, make_sentences, padded_batch

import maskpolicy.policies.artifacts as artifacts
from maskpolicy.policies import ArtifactError, ConfigError, LearnedPolicy, VocabInfo, get_policy

VARIANTS = [
    {"encoder": "transformer"},
    {"encoder": "bigru"},
    {"encoder": "transformer", "context_dim": 8, "num_layers": 2},
]


@pytest.fixture(autouse=True)
def _one_thread():
    """These networks are tiny: extra intra-op threads only add overhead (and stall badly on a
    busy machine), so run this module single-threaded and restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _perturbed(policy: LearnedPolicy, seed: int = 0) -> LearnedPolicy:
    """Random weights, so that saved/loaded probabilities differ from one token to another."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return policy.eval()


def _extras(policy: LearnedPolicy, batch: dict, seed: int = 1) -> dict:
    if not policy.context_dim:
        return {}
    B, T = batch["input_ids"].shape
    return {"hidden_states": torch.randn(B, T, policy.context_dim, generator=torch.Generator().manual_seed(seed))}


def test_default_parameter_count_is_small():
    V = 8000  # an 8k vocabulary, without training a tokenizer of that size
    vocab = VocabInfo(vocab_size=V, mask_id=4, pad_id=0, special_ids=torch.arange(5),
                      continues_word=torch.zeros(V, dtype=torch.bool), tokens=[f"t{i}" for i in range(V)],
                      fingerprint="test")
    n = sum(p.numel() for p in LearnedPolicy(vocab=vocab).parameters())
    assert n < 1_000_000, n


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_forward_shape_range_zero_at_special_and_padding_invariance(tokenizer, sentences, options):
    policy = _perturbed(LearnedPolicy(tokenizer, **options))
    batch = padded_batch(tokenizer, sentences[:6])
    extras = _extras(policy, batch)
    probs = policy(batch["input_ids"], batch["attention_mask"], **extras)
    assert probs.shape == batch["input_ids"].shape
    special = torch.isin(batch["input_ids"], policy.special_ids) | (batch["attention_mask"] == 0)
    assert (probs[special] == 0).all() and (probs[~special] > 0).all() and (probs <= 1).all()
    assert probs[~special].std() > 0.01  # perturbed weights: tokens are scored differently
    # The same sentence alone (no padding) gets the same logits as inside the padded batch.
    one = padded_batch(tokenizer, sentences[:1])
    T = one["input_ids"].shape[1]
    alone = policy.logits(one["input_ids"], one["attention_mask"], **{k: v[:1, :T] for k, v in extras.items()})
    inside = policy.logits(batch["input_ids"], batch["attention_mask"], **extras)[:1, :T]
    assert torch.allclose(alone, inside, atol=1e-5)


def test_context_hidden_states_change_the_output_and_absent_means_zeros(tokenizer, batch):
    policy = _perturbed(LearnedPolicy(tokenizer, context_dim=8))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    zeros = torch.zeros(*ids.shape, 8)
    assert torch.allclose(policy.logits(ids, mask), policy.logits(ids, mask, hidden_states=zeros))
    assert not torch.allclose(policy.logits(ids, mask), policy.logits(ids, mask, **_extras(policy, batch)))
    with pytest.raises(ConfigError, match="hidden_states"):
        policy.logits(ids, mask, hidden_states=torch.zeros(*ids.shape, 5))


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_gradients_reach_every_parameter(tokenizer, batch, options):
    policy = LearnedPolicy(tokenizer, **options).train()
    ids, mask = batch["input_ids"][:8].clone(), batch["attention_mask"][:8].clone()
    mask[-1] = 0  # a row with no real token at all must not produce NaN
    probs = policy(ids, mask, **_extras(policy, {"input_ids": ids}))
    (probs * torch.linspace(-1, 1, ids.shape[1])).sum().backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def _name_labels(tokenizer, texts: list[str]) -> tuple[dict, torch.Tensor]:
    """Label 1 for every token of a capitalised name from NAMES (pieces "##" included)."""
    batch = padded_batch(tokenizer, texts)
    labels = torch.zeros_like(batch["input_ids"], dtype=torch.float)
    for row, text in enumerate(texts):
        words = text.split()
        for t, w in enumerate(batch["word_ids"][row].tolist()):
            labels[row, t] = float(w >= 0 and words[w] in NAMES)
    return batch, labels


def test_can_learn_a_token_pattern(tokenizer, sentences):
    torch.manual_seed(0)
    policy = LearnedPolicy(tokenizer, embedding_dim=32).train()
    batch, labels = _name_labels(tokenizer, sentences[:64])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    real = policy.maskable(ids, mask)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(policy.logits(ids, mask)[real], labels[real])
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_batch, test_labels = _name_labels(tokenizer, sentences[200:264])  # unseen sentences
    ok = policy.maskable(test_batch["input_ids"], test_batch["attention_mask"])
    with torch.no_grad():
        pred = policy(test_batch["input_ids"], test_batch["attention_mask"])[ok] > 0.5
    gold = test_labels[ok].bool()
    accuracy = (pred == gold).float().mean().item()
    recall = pred[gold].float().mean().item()  # all-zero predictions would already be ~90% accurate
    assert accuracy > 0.9 and recall > 0.9, (accuracy, recall)


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_round_trip_gives_identical_probabilities(tokenizer, batch, tmp_path, options):
    policy = _perturbed(LearnedPolicy(tokenizer, **options))
    extras = _extras(policy, batch)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    expected = policy(ids, mask, **extras)
    path = policy.save_pretrained(tmp_path / "policy", metadata={"task": "names", "metrics": {"acc": 0.5}})
    config = json.loads((tmp_path / "policy" / "policy_config.json").read_text())
    assert config["format"] == artifacts.FORMAT and config["policy"] == "learned"
    assert config["options"] == policy.config() and config["metadata"]["task"] == "names"
    assert config["vocab_fingerprint"] == policy.vocab.fingerprint and config["vocab_size"] == policy.vocab.vocab_size
    for loaded in (LearnedPolicy.from_pretrained(path, tokenizer), get_policy(str(path), tokenizer),
                   LearnedPolicy.from_pretrained(path)):  # the last one loads the saved tokenizer
        assert isinstance(loaded, LearnedPolicy) and loaded.config() == policy.config()
        assert loaded.vocab.fingerprint == policy.vocab.fingerprint
        assert torch.equal(loaded(ids, mask, **extras), expected)


def test_saving_over_an_old_policy_replaces_it(tokenizer, tmp_path):
    LearnedPolicy(tokenizer, embedding_dim=16, num_heads=1).save_pretrained(tmp_path / "p")
    LearnedPolicy(tokenizer, embedding_dim=8, num_heads=1).save_pretrained(tmp_path / "p")
    assert LearnedPolicy.from_pretrained(tmp_path / "p", tokenizer).embedding_dim == 8
    assert os.listdir(tmp_path) == ["p"]  # no temporary or backup directory left


def test_failed_save_keeps_the_old_policy_and_leaves_no_temp_dir(tokenizer, tmp_path, monkeypatch):
    old = LearnedPolicy(tokenizer, embedding_dim=16, num_heads=1)
    target = tmp_path / "p"
    old.save_pretrained(target)
    before = {f: (target / f).read_bytes() for f in os.listdir(target)}

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(artifacts, "save_file", broken_save)
    with pytest.raises(RuntimeError, match="simulated"):
        LearnedPolicy(tokenizer, embedding_dim=8, num_heads=1).save_pretrained(target)
    with pytest.raises(RuntimeError, match="simulated"):
        LearnedPolicy(tokenizer).save_pretrained(tmp_path / "fresh")
    assert os.listdir(tmp_path) == ["p"]
    assert {f: (target / f).read_bytes() for f in os.listdir(target)} == before
    assert LearnedPolicy.from_pretrained(target, tokenizer).embedding_dim == 16


def test_refuses_to_replace_a_directory_that_is_not_a_policy(tokenizer, tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ArtifactError, match="refusing to replace"):
        LearnedPolicy(tokenizer).save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def _drop(path, name):
    os.remove(path / name)


def _write(name: str, data: bytes):
    return lambda path: (path / name).write_bytes(data)


def _wrong_shapes(path):
    """Weights with the right keys but one tensor of another shape (e.g. another embedding_dim)."""
    state = artifacts.load_file(str(path / "model.safetensors"))
    state["head.1.weight"] = torch.zeros(1, 7)
    artifacts.save_file(state, str(path / "model.safetensors"))


BREAKAGES = {
    "missing config": (lambda p: _drop(p, "policy_config.json"), "policy_config.json is missing"),
    "corrupt config": (_write("policy_config.json", b"{not json"), "corrupt"),
    "wrong format": (_write("policy_config.json", b'{"format": "other/9"}'), "expected 'maskpolicy-learned-policy/1'"),
    "missing weights": (lambda p: _drop(p, "model.safetensors"), "model.safetensors is missing"),
    "corrupt weights": (_write("model.safetensors", b"\x00garbage" * 10), "corrupt"),
    "wrong-shaped weights": (_wrong_shapes, "has shape"),
    "missing tokenizer": (lambda p: [_drop(p, f) for f in ("tokenizer.json", "tokenizer_config.json")], "no tokenizer"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_artifacts_raise_artifact_error(tokenizer, tmp_path, breakage):
    break_it, message = BREAKAGES[breakage]
    path = tmp_path / "p"
    LearnedPolicy(tokenizer).save_pretrained(path)
    break_it(path)
    with pytest.raises(ArtifactError, match=message):
        LearnedPolicy.from_pretrained(path)  # tokenizer=None: the saved one must be usable


def test_missing_directory_and_mismatched_tokenizer(tokenizer, tmp_path):
    with pytest.raises(ArtifactError, match="no saved policy"):
        LearnedPolicy.from_pretrained(tmp_path / "nowhere", tokenizer)
    LearnedPolicy(tokenizer).save_pretrained(tmp_path / "p")
    other = build_test_tokenizer(make_sentences(200, seed=5) + ["zebra quokka"], vocab_size=280)
    with pytest.raises(ArtifactError, match="trained with another tokenizer"):
        LearnedPolicy.from_pretrained(tmp_path / "p", other)
    with pytest.raises(ArtifactError, match="trained with another tokenizer"):
        get_policy(str(tmp_path / "p"), other)


@pytest.mark.parametrize("options", [
    {"embedding_dim": 0}, {"embedding_dim": 63}, {"num_layers": 0}, {"num_heads": 2.0}, {"encoder": "lstm"},
    {"dropout": 1.0}, {"dropout": -0.1}, {"context_dim": -1}, {"init_bias": float("nan")}, {"max_length": True},
    {"no_such_option": 1},
])
def test_bad_options_raise_config_error(tokenizer, options):
    with pytest.raises(ConfigError):
        get_policy("learned", tokenizer, **options)


def test_directory_loader_refuses_options_and_long_inputs(tokenizer, tmp_path):
    LearnedPolicy(tokenizer).save_pretrained(tmp_path / "p")
    with pytest.raises(ConfigError, match="only map_location"):
        get_policy(str(tmp_path / "p"), tokenizer, embedding_dim=8)
    with pytest.raises(ConfigError, match="max_length"):
        LearnedPolicy(tokenizer, max_length=8)(torch.full((1, 9), 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_its_batches(tokenizer, batch, tmp_path):
    policy = _perturbed(LearnedPolicy(tokenizer, encoder="bigru"))
    expected = policy(batch["input_ids"], batch["attention_mask"])
    policy.save_pretrained(tmp_path / "p")
    for moved in (policy.to("cuda"), LearnedPolicy.from_pretrained(tmp_path / "p", tokenizer, map_location="cuda")):
        probs = moved(batch["input_ids"].cuda(), batch["attention_mask"].cuda())
        assert probs.device.type == "cuda" and torch.allclose(probs.cpu(), expected, atol=1e-5)


def test_temperature_sharpens_without_reordering(tokenizer, batch, tmp_path):
    policy = LearnedPolicy(tokenizer, init_bias=0.0)
    with torch.no_grad():
        policy.head[1].bias.fill_(-1.0)
    base = policy(batch["input_ids"], batch["attention_mask"])
    policy.save_pretrained(str(tmp_path / "p"), tokenizer=tokenizer)
    sharp = get_policy(str(tmp_path / "p"), tokenizer, temperature=0.25)(batch["input_ids"], batch["attention_mask"])
    real = base > 0
    assert torch.equal(base[real].argsort(stable=True), sharp[real].argsort(stable=True))
    assert (sharp[real] < base[real]).all()  # every probability below 0.5 moves towards 0
    with pytest.raises(ConfigError, match="temperature"):
        LearnedPolicy(tokenizer, temperature=0.0)
