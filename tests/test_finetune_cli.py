"""``maskpolicy finetune`` as a user runs it: the three methods side by side, their results
and artifacts, cloze tasks through the MLM head, and bad input (one line, exit 2, nothing
written)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from maskpolicy.cli import main
from maskpolicy.train.weightmask import load_adapted

RUN = ["--epochs", "3", "--max-length", "32", "--quiet", "--head-lr", "1e-3", "--score-lr", "1e-2"]


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory, toy_classification):
    """The toy task as a task directory (what a user writes), with CSV and JSONL files."""
    task, _ = toy_classification
    d = tmp_path_factory.mktemp("toy-task")
    (d / "task.yaml").write_text("name: toy\ntype: classification\ncorpus: corpus.txt\ntrain: train.jsonl\n"
                                 "eval: eval.jsonl\n", encoding="utf-8")
    (d / "corpus.txt").write_text("\n\n".join(p.text for p in task.corpus) + "\n", encoding="utf-8")
    for split, rows in (("train", task.train), ("eval", task.eval)):
        lines = [json.dumps({"text": ex.text, "label": task.label_names[ex.label]}) for ex in rows]
        (d / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(d)


def _results(out) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def three_methods(toy_dir, tiny_lm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    for method in ("full", "head", "mask"):
        # A random tiny body: the mask alone (frozen head) learns the toy task (test_weightmask).
        extra = {"mask": ["--bake", "--frozen-head", "--epochs", "5"], "full": ["--lr", "1e-3"], "head": []}[method]
        assert main(["finetune", "--task", toy_dir, "--model", tiny_lm_dir, "--method", method,
                     "--out", str(root / method), *RUN, *extra]) == 0
    return root


def test_three_methods_side_by_side(three_methods, capsys):
    full, head, mask = (_results(three_methods / m) for m in ("full", "head", "mask"))
    assert full["trainable_parameters"] > mask["trainable_parameters"] > head["trainable_parameters"]
    assert mask["trainable_parameters"] == mask["masked_share"]["masked_weights"]  # scores only: the head is frozen
    assert full["bytes_stored_total"] > mask["bytes_stored_total"] > head["bytes_stored_total"]
    # A random tiny body: only the mask can make it solve the task (head only: chance).
    assert mask["metrics"]["accuracy"] > 0.75 and head["metrics"]["accuracy"] < 0.65
    share = mask["masked_share"]
    assert 0 < share["overall"] < 1 and len(share["per_layer"]) == 12
    assert set(os.listdir(three_methods / "mask" / "adapter")) == {"adapter_config.json", "mask.safetensors", "head.safetensors"}
    assert (three_methods / "full" / "model" / "model.safetensors").is_file()
    assert (three_methods / "mask" / "baked" / "model.safetensors").is_file()
    assert mask["seconds_per_step"] > 0 and mask["steps"] == 5 * 13  # 400 examples / 32, 5 epochs
    assert full["metrics"]["accuracy"] > 0.75  # full fine-tuning at 1e-3 learns it too


def test_the_saved_mask_reproduces_the_reported_accuracy(three_methods, toy_classification):
    from maskpolicy.train.adapt import classification_accuracy

    task, _ = toy_classification
    model, tokenizer = load_adapted(str(three_methods / "mask" / "adapter"))
    accuracy = classification_accuracy(model.model, tokenizer, task.eval, max_length=32)
    assert accuracy == _results(three_methods / "mask")["metrics"]["accuracy"]


def test_cloze_task_through_the_mlm_head(small_synthetic_task, small_synthetic_tokenizer, tmp_path):
    from maskpolicy.train.models import preset_model

    lm_dir = tmp_path / "lm"
    preset_model("tiny", len(small_synthetic_tokenizer), 64).save_pretrained(lm_dir)
    small_synthetic_tokenizer.save_pretrained(lm_dir)
    for method in ("mask", "head"):
        out = tmp_path / method
        assert main(["finetune", "--task", "synthetic:birthplace", "--task-option", "num_entities=40",
                     "--model", str(lm_dir), "--method", method, "--out", str(out), "--epochs", "1", "--quiet"]) == 0
        results = _results(out)
        assert results["task"]["kind"] == "cloze" and 0 <= results["metrics"]["cloze_em"] <= 1
        heads = json.loads((out / "adapter" / "adapter_config.json").read_text())["head"]
        assert any(name.startswith("cls.predictions.transform") for name in heads)
        assert "cls.predictions.decoder.weight" not in heads  # tied to the frozen embeddings
    model, _ = load_adapted(str(tmp_path / "mask" / "adapter"))
    assert type(model.model).__name__ == "BertForMaskedLM"


def _one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskpolicy: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("flags, message", [
    (["--pattern", r"no\.such\.layer"], "matches no linear layer"),
    (["--tau", "0"], "tau must be in (0, 1)"),
    (["--initial-sparsity", "1.5"], "initial_sparsity must be in [0, 1)"),
    (["--score-lr", "0"], "score_learning_rate must be in (0, 1]"),
    (["--head-lr", "-1"], "head_learning_rate must be in (0, 1]"),
    (["--pattern", "("], "not a regular expression"),
])
def test_bad_mask_options(toy_dir, tiny_lm_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code = main(["finetune", "--task", toy_dir, "--model", tiny_lm_dir, "--method", "mask", "--out", str(out), *RUN, *flags])
    assert message in _one_error_line(capsys, code)
    assert not out.exists() or not any(n in os.listdir(out) for n in ("results.json", "adapter"))


def test_other_bad_input(toy_dir, tiny_lm_dir, tmp_path, capsys):
    base = ["finetune", "--task", toy_dir, "--model", tiny_lm_dir, *RUN]
    assert "--bake exports a masked model" in _one_error_line(capsys, main([*base, "--method", "full", "--bake",
                                                                            "--out", str(tmp_path / "a")]))
    assert "invalid choice: 'lora'" in _one_error_line(capsys, main([*base, "--method", "lora", "--out", str(tmp_path / "b")]))
    assert "finetune needs --model" in _one_error_line(capsys, main(["finetune", "--task", toy_dir, "--out", str(tmp_path / "c")]))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "results.json").write_text("{}")
    line = _one_error_line(capsys, main([*base, "--method", "head", "--out", str(tmp_path / "d")]))
    assert "holds an earlier run" in line and "--overwrite" in line
    (tmp_path / "file").write_text("x")
    assert "--out" in _one_error_line(capsys, main([*base, "--method", "head", "--out", str(tmp_path / "file")]))


def test_cloze_without_a_trained_head_and_a_frozen_head_is_refused(small_synthetic_tokenizer, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    encoder = tmp_path / "encoder"  # an encoder checkpoint: no MLM head
    BertModel(BertConfig(vocab_size=len(small_synthetic_tokenizer), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64), add_pooling_layer=False).save_pretrained(encoder)
    small_synthetic_tokenizer.save_pretrained(encoder)
    capsys.readouterr()  # the save's own progress bar
    code = main(["finetune", "--task", "synthetic:birthplace", "--task-option", "num_entities=40", "--model", str(encoder),
                 "--method", "mask", "--frozen-head", "--out", str(tmp_path / "out"), "--quiet"])
    assert "has no trained MLM head" in _one_error_line(capsys, code)
    assert not (tmp_path / "out" / "results.json").exists()


def test_adapter_of_another_base_is_refused_by_the_loader(three_methods, tmp_path, tiny_lm_dir):
    from maskpolicy.policies.errors import ArtifactError
    from maskpolicy.train.models import load_masked_lm

    other = load_masked_lm(tiny_lm_dir)
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight[3, 0] += 1e-3
    other.save_pretrained(tmp_path / "other")
    for name in os.listdir(tiny_lm_dir):
        if name.startswith("tokenizer"):
            (tmp_path / "other" / name).write_bytes(open(os.path.join(tiny_lm_dir, name), "rb").read())
    with pytest.raises(ArtifactError, match="another base model"):
        load_adapted(str(three_methods / "mask" / "adapter"), base=str(tmp_path / "other"))


def test_corpus_task_has_nothing_to_adapt_to():
    from maskpolicy.policies.errors import ConfigError
    from maskpolicy.tasks.base import Passage, Task
    from maskpolicy.train.models import preset_model
    from maskpolicy.train.task_models import build_task_model

    corpus = Task("plain", "corpus", corpus=[Passage("some text")])
    with pytest.raises(ConfigError, match="need a classification or cloze task"):
        build_task_model(preset_model("tiny", 100, 32), corpus)


def test_options_from_a_config_file(toy_dir, tiny_lm_dir, tmp_path, capsys):
    config = tmp_path / "mask.yaml"
    config.write_text(f"task: {toy_dir}\nmodel: {tiny_lm_dir}\nmethod: mask\nepochs: 1\nmax_length: 32\n"
                      "mask:\n  tau: 0.02\n  initial_sparsity: 0.2\n  train_head: false\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["finetune", "--config", str(config), "--out", str(out), "--initial-sparsity", "0.1", "--quiet"]) == 0
    results = _results(out)
    assert results["config"]["mask"]["tau"] == 0.02 and results["config"]["mask"]["train_head"] is False
    assert results["config"]["mask"]["initial_sparsity"] == 0.1  # the flag overrides the file
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["tau"] == 0.02 and adapter["method"] == "mask"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"task: {toy_dir}\nmodel: {tiny_lm_dir}\nmethod: mask\nmask:\n  temperature: 3\n", encoding="utf-8")
    assert "unknown weight mask option(s): temperature" in _one_error_line(
        capsys, main(["finetune", "--config", str(bad), "--out", str(tmp_path / "o2")]))


def test_the_seed_decides_the_new_head_whatever_the_process_drew_before(toy_dir, tiny_lm_dir, tmp_path):
    from safetensors.torch import load_file

    heads = []
    for i, seed in enumerate([3, 3, 4]):
        torch.rand(100 + i)  # different draws before each run
        out = tmp_path / f"run{i}"
        assert main(["finetune", "--task", toy_dir, "--model", tiny_lm_dir, "--method", "head", "--seed", str(seed),
                     "--out", str(out), "--epochs", "1", "--max-length", "32", "--quiet"]) == 0
        heads.append(load_file(out / "adapter" / "head.safetensors"))
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    assert not torch.equal(heads[0]["classifier.weight"], heads[2]["classifier.weight"])
