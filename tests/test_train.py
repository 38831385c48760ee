"""Pre-training loop: a short end-to-end run, determinism, resume, and bad input."""
from __future__ import annotations

import json
import os

import pytest
import torch

from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.train.config import PretrainConfig
from maskpolicy.train.pretrain import pretrain

SMALL = dict(task="synthetic:birthplace", task_options={"num_entities": 16}, steps=12, batch_size=8,
             max_length=32, eval_every=4, save_every=4, progress=False, vocab_size=400)


class Killed(Exception):
    pass


def _weights(path):
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model", "model.safetensors"))


def test_short_run_writes_model_results_and_checkpoints(tmp_path):
    out = tmp_path / "run"
    results = pretrain(PretrainConfig(policy="salient_span", out=str(out), **SMALL))
    assert results["steps"] == 12
    assert [h["step"] for h in results["history"]] == [4, 8, 12]
    assert 0.0 <= results["metrics"]["cloze_em"] <= 1.0 and "cloze_em_train" in results["metrics"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["metrics"] == results["metrics"]
    assert (out / "model" / "config.json").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step-000008", "step-000012"]
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]


def test_checkpoints_drop_only_accelerates_tied_weights_notice(tmp_path, caplog):
    import logging

    caplog.set_level(logging.WARNING)
    pretrain(PretrainConfig(policy="random", out=str(tmp_path / "r"), evaluate=False, **SMALL))
    assert "Removed shared tensor" not in caplog.text  # accelerate logs it on every save_state otherwise
    assert not logging.getLogger("accelerate.utils.other").filters  # the filter is scoped to the save


def test_same_seed_same_run_and_resume_after_kill_matches(tmp_path):
    full = pretrain(PretrainConfig(policy="span", out=str(tmp_path / "full"), **SMALL))

    def kill_at_6(step, history):
        if step == 6:
            raise Killed()

    killed = PretrainConfig(policy="span", out=str(tmp_path / "killed"), **SMALL)
    with pytest.raises(Killed):
        pretrain(killed, on_step=kill_at_6)
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = pretrain(PretrainConfig(policy="span", out=str(tmp_path / "killed"), resume=True, **SMALL))
    assert resumed["history"] == full["history"]
    assert resumed["metrics"] == full["metrics"]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = pretrain(PretrainConfig(policy="span", out=str(tmp_path / "again"), **SMALL))
    assert again["history"] == full["history"]  # same seed, same masks, same metrics


def test_other_seed_gives_other_run(tmp_path):
    a = pretrain(PretrainConfig(policy="random", out=str(tmp_path / "a"), evaluate=False, **SMALL))
    b = pretrain(PretrainConfig(policy="random", out=str(tmp_path / "b"), evaluate=False, **{**SMALL, "seed": 1}))
    assert a["history"] != b["history"]


@pytest.mark.parametrize("arch", ["mlm", "seq2seq"])
def test_a_learned_policy_run_starts_from_the_same_model_as_a_heuristic_one(tmp_path, arch):
    # A policy network that gives every token probability 1 masks exactly as ``random`` does
    # (the same Gumbel draws from the same per-step generator). Building it initialises a
    # network; that must not move the state that initialises the model, or learned-policy
    # cells do not start from the model of the heuristic cells of their seed.
    options = {**SMALL, "evaluate": False, "steps": 6, "arch": arch, "eval_every": 0}
    heuristic = pretrain(PretrainConfig(policy="random", out=str(tmp_path / "random"), **options))
    learned = pretrain(PretrainConfig(policy="learned", policy_options={"init_bias": 40.0},
                                      out=str(tmp_path / "learned"), **options))
    assert [h["loss"] for h in learned["history"]] == [h["loss"] for h in heuristic["history"]]
    a, b = _weights(tmp_path / "random"), _weights(tmp_path / "learned")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="no checkpoint"):
        pretrain(PretrainConfig(out=str(tmp_path / "none"), resume=True, **SMALL))


def test_intermediate_pretraining_from_an_existing_checkpoint(tmp_path):
    first = tmp_path / "general"
    pretrain(PretrainConfig(policy="random", out=str(first), evaluate=False, **SMALL))
    second = pretrain(PretrainConfig(policy="whole_word", model=str(first / "model"), out=str(tmp_path / "inter"),
                                     **{**SMALL, "steps": 4}))
    assert second["steps"] == 4 and second["config"]["model"] == str(first / "model")


@pytest.mark.parametrize("damage", ["missing", "no_weights", "corrupt_weights", "no_config"])
def test_bad_model_directory_is_refused(tmp_path, damage):
    src = tmp_path / "src"
    pretrain(PretrainConfig(policy="random", out=str(src), evaluate=False, **{**SMALL, "steps": 2}))
    model = src / "model"
    if damage == "missing":
        model = tmp_path / "does-not-exist"
    elif damage == "no_weights":
        os.remove(model / "model.safetensors")
    elif damage == "corrupt_weights":
        (model / "model.safetensors").write_bytes(b"not a safetensors file")
    else:
        os.remove(model / "config.json")
    with pytest.raises(ArtifactError):
        pretrain(PretrainConfig(policy="random", model=str(model), out=str(tmp_path / "x"), **SMALL))
    assert not (tmp_path / "x" / "model").exists()


def test_long_texts_are_truncated_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="truncated") as caught:
        results = pretrain(PretrainConfig(policy="random", out=str(tmp_path / "t"), evaluate=False,
                                **{**SMALL, "steps": 1, "max_length": 12}))
    assert any("were truncated" in str(w.message) for w in caught)
    assert results["steps"] == 1  # truncated, said so, and trained


def _classification_task(root):
    import random

    rng = random.Random(0)
    good, bad = ["great", "superb", "lovely"], ["awful", "dull", "poor"]
    lines = []
    for i in range(120):
        label = i % 2
        word = rng.choice(good if label else bad)
        lines.append({"text": f"the film was {word} and the cast was {rng.choice(['fine', 'young', 'large'])}",
                      "label": "pos" if label else "neg"})
    (root / "corpus.txt").write_text("\n".join(d["text"] for d in lines) + "\n")
    (root / "train.jsonl").write_text("\n".join(json.dumps(d) for d in lines[:100]) + "\n")
    (root / "eval.jsonl").write_text("\n".join(json.dumps(d) for d in lines[100:]) + "\n")
    (root / "task.yaml").write_text("name: toy-sentiment\ntype: classification\ncorpus: corpus.txt\n"
                                    "train: train.jsonl\neval: eval.jsonl\n")
    return root


def test_classification_task_from_files_is_fine_tuned_and_scored(tmp_path):
    task_dir = _classification_task(tmp_path)
    options = {**SMALL, "task": str(task_dir), "task_options": {}, "steps": 4}
    results = pretrain(PretrainConfig(policy="whole_word", out=str(tmp_path / "run"),
                                      finetune={"epochs": 10, "batch_size": 16, "learning_rate": 1e-3}, **options))
    m = results["metrics"]
    assert m["num_eval"] == 20 and 0.0 <= m["accuracy"] <= 1.0 and m["score"] == m["accuracy"]
    assert m["accuracy"] >= 0.8  # one word decides the label: fine-tuning must find it
    assert 0.0 <= m["mlm_accuracy"] <= 1.0


@pytest.mark.parametrize("probe", [{"epochs": 6, "batch_size": 16, "learning_rate": 1e-3},
                                   {"method": "linear"}], ids=["full", "linear"])
def test_downstream_probes_record_accuracy_without_changing_the_run(tmp_path, probe):
    task_dir = _classification_task(tmp_path)
    options = {**SMALL, "task": str(task_dir), "task_options": {}, "steps": 8, "eval_every": 2, "evaluate": False,
               "finetune": {"epochs": 10, "batch_size": 16, "learning_rate": 1e-3}}
    plain = pretrain(PretrainConfig(policy="random", out=str(tmp_path / "plain"), **options))
    probed = pretrain(PretrainConfig(policy="random", out=str(tmp_path / "probed"), probe_every=4, probe=probe,
                                     **options))
    assert [h["step"] for h in probed["history"] if "probe_accuracy" in h] == [4, 8]
    assert all(h["probe_accuracy"] >= 0.8 for h in probed["history"] if "probe_accuracy" in h)  # one word decides
    # Probes fine-tune copies and restore every random state: the pre-training is unchanged.
    assert [h["loss"] for h in probed["history"]] == [h["loss"] for h in plain["history"]]
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "probed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_probe_options_are_validated():
    with pytest.raises(ConfigError, match="probe"):
        PretrainConfig(probe={"epochs": 1, "bogus": 2})
    with pytest.raises(ConfigError, match="probe"):
        PretrainConfig(probe="cheap")
    with pytest.raises(ConfigError, match="multiple of eval_every"):
        PretrainConfig(eval_every=2, probe_every=3)


@pytest.mark.slow
def test_gold_spans_beat_random_on_the_synthetic_world(tmp_path):
    """The headline: tiny BERT, 2,000 intermediate steps (a few minutes on 2 CPU cores)."""
    base = dict(task="synthetic:birthplace", steps=2000, progress=False, eval_every=0, save_every=0)
    salient = pretrain(PretrainConfig(policy="salient_span", out=str(tmp_path / "s"), **base))
    random_ = pretrain(PretrainConfig(policy="random", out=str(tmp_path / "r"), **base))
    assert salient["metrics"]["cloze_em"] >= 0.9
    assert random_["metrics"]["cloze_em"] <= 0.5


def test_masked_lm_loss_gathers_the_head_and_equals_the_models_own_loss():
    from transformers import BertConfig, BertForMaskedLM

    from maskpolicy.train.head import masked_lm_loss

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=16)).double()
    ids = torch.randint(5, 50, (3, 10))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 7], labels[2, 8] = 7, 9, 11, 13
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    model.eval()
    full = model(**batch).loss
    gathered = masked_lm_loss(model, batch)
    assert torch.allclose(gathered, full, atol=1e-12)
    g_full = torch.autograd.grad(full, list(model.parameters()))
    g_gathered = torch.autograd.grad(masked_lm_loss(model, batch), list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g_full, g_gathered))
    assert not model.get_output_embeddings()._forward_pre_hooks  # the hook is removed again


def test_evaluations_at_gathered_positions_match_full_logits():
    """cloze_accuracy / masked_token_accuracy project only at the scored positions and sort
    questions by length; an independent full-logits computation must agree."""
    from maskpolicy.policies import Masker, MaskingCollator, MaskingConfig, get_policy
    from maskpolicy.tasks.features import cloze_exact_match, encode_cloze, encode_passages
    from maskpolicy.tasks.synthetic import SyntheticWorldConfig, build_synthetic_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task
    from maskpolicy.train.evaluate import cloze_accuracy, masked_token_accuracy
    from maskpolicy.train.models import preset_model

    task = build_synthetic_task("birthplace", SyntheticWorldConfig(num_entities=24))
    tokenizer = tokenizer_for_task(task, vocab_size=400)
    torch.manual_seed(0)
    model = preset_model("tiny", len(tokenizer), 64, tokenizer.pad_token_id).eval()
    with torch.no_grad():
        questions = task.train + task.eval
        data = encode_cloze(tokenizer, questions, max_length=64)
        # An untrained model gets no question right: make it always predict the commonest
        # one-token answer, so that some questions are right and some wrong.
        answers = [[t for t in r["labels"] if t != -100] for r in data]
        common = max({a[0] for a in answers if len(a) == 1}, key=lambda t: answers.count([t]))
        model.get_output_embeddings().bias[common] += 100.0
        batch = MaskingCollator(tokenizer).pad([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in data])
        labels = batch.pop("labels")
        reference = cloze_exact_match(model(**batch).logits.argmax(-1), labels).float().mean().item()
        assert 0.0 < reference < 1.0
        assert cloze_accuracy(model, tokenizer, questions, 64, batch_size=7) == pytest.approx(reference, abs=1e-12)

        passages = task.corpus[:40]
        got = masked_token_accuracy(model, tokenizer, passages, 64, batch_size=16, seed=5)
        encoded = encode_passages(tokenizer, passages, max_length=64, span_splits=()).select_columns(["input_ids"])
        masker = Masker(get_policy("random", tokenizer), MaskingConfig(mask_replace_prob=1.0, random_replace_prob=0.0))
        generator = torch.Generator().manual_seed(5)
        hits = total = 0
        loss = 0.0
        pad = MaskingCollator(tokenizer).pad
        for start in range(0, len(encoded), 16):
            masked = masker(pad([encoded[i] for i in range(start, min(start + 16, len(encoded)))]), generator=generator)
            out = model(**masked)
            sel = masked["labels"] != -100
            hits += int((out.logits.argmax(-1)[sel] == masked["labels"][sel]).sum())
            loss += float(out.loss) * int(sel.sum())
            total += int(sel.sum())
    assert got["masked_tokens"] == total > 0
    assert got["mlm_accuracy"] == pytest.approx(hits / total, abs=1e-12)
    assert got["mlm_loss"] == pytest.approx(loss / total, rel=1e-5)
