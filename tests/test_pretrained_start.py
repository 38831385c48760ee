"""Starting from a pretrained encoder: offline sources by name, a new MLM head warmed up with
the body frozen, fine-tuning from it, and the bad inputs around it."""
from __future__ import annotations

import json
import os

import pytest
import torch

from maskpolicy.cli import main
from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.train import sources
from maskpolicy.train.config import PretrainConfig
from maskpolicy.train.pretrain import pretrain

try:
    MINILM = sources.source_dir("minilm-l6")
except ArtifactError:
    MINILM = None
needs_minilm = pytest.mark.skipif(MINILM is None, reason="offline model minilm-l6 not installed: "
                                  + sources.SOURCES["minilm-l6"].install)
TINY = dict(task="synthetic:birthplace", task_options={"num_entities": 16}, batch_size=8, max_length=32,
            eval_every=0, save_every=0, evaluate=False, progress=False)


def _one_error_line(capsys, code: int, *needles: str) -> str:
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maskpolicy: error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def test_an_offline_source_that_is_not_installed_names_its_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sources.SOURCES, "minilm-l6", sources.OfflineSource(
        name="minilm-l6", package="no_such_package_maskpolicy", subdir="model", install="pip install nothing==1",
        about=""))
    code = main(["pretrain", "--model", "minilm-l6", "--task", "synthetic:birthplace", "--out", str(tmp_path / "r")])
    _one_error_line(capsys, code, "offline model is not installed", "pip install nothing==1")
    assert not (tmp_path / "r").exists()


def test_a_negative_head_warmup_is_refused(tmp_path, capsys):
    code = main(["pretrain", "--head-warmup-steps", "-1", "--out", str(tmp_path / "r")])
    _one_error_line(capsys, code, "head_warmup_steps must be a whole number >= 0")
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_that_is_neither_masked_lm_nor_encoder_is_refused(tmp_path, capsys):
    from safetensors.torch import save_file
    from transformers import BertConfig, GPT2Config, GPT2LMHeadModel

    gpt = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, bos_token_id=0,
                                eos_token_id=0)).save_pretrained(gpt)
    tokenizer = _tokenizer_dir(tmp_path)
    capsys.readouterr()  # what building the fixtures printed
    code = main(["pretrain", *_tiny_flags(), "--model", str(gpt), "--tokenizer", str(tokenizer),
                 "--out", str(tmp_path / "r1")])
    _one_error_line(capsys, code, "not a masked LM or encoder")
    # A BERT config whose weights are not a BERT encoder's (nothing under the encoder's names).
    odd = tmp_path / "odd"
    odd.mkdir()
    BertConfig(vocab_size=400, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(odd)
    save_file({"something.else.weight": torch.zeros(4, 4)}, str(odd / "model.safetensors"))
    capsys.readouterr()
    code = main(["pretrain", *_tiny_flags(), "--model", str(odd), "--tokenizer", str(tokenizer),
                 "--out", str(tmp_path / "r2")])
    _one_error_line(capsys, code, "not a masked-LM or encoder checkpoint", "encoder tensors are missing")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def _tiny_flags() -> list[str]:
    return ["--task", "synthetic:birthplace", "--task-option", "num_entities=16", "--steps", "2", "--batch-size", "8",
            "--max-length", "32", "--vocab-size", "400", "--eval-every", "0", "--no-evaluate", "--quiet"]


def _tokenizer_dir(tmp_path, seed: int = 0):
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task

    path = tmp_path / f"tok{seed}"
    if not path.exists():
        tokenizer_for_task(get_task("synthetic:birthplace", num_entities=16, seed=seed), vocab_size=400).save_pretrained(path)
    return path


def test_a_tokenizer_that_does_not_match_the_checkpoint_is_refused_before_writing(tmp_path, capsys):
    first = tmp_path / "first"
    pretrain(PretrainConfig(out=str(first), steps=2, vocab_size=400, **TINY))
    other = _tokenizer_dir(tmp_path, seed=5)  # another world: another vocabulary, same size
    capsys.readouterr()
    code = main(["pretrain", *_tiny_flags(), "--model", str(first / "model"), "--tokenizer", str(other),
                 "--out", str(tmp_path / "second")])
    _one_error_line(capsys, code, "the tokenizer does not match model", "leave out --tokenizer")
    assert not (tmp_path / "second").exists()
    # Its own tokenizer (the default for a checkpoint) is accepted.
    assert main(["pretrain", *_tiny_flags(), "--model", str(first / "model"), "--out", str(tmp_path / "third")]) == 0


@needs_minilm
def test_the_encoder_loads_with_a_new_head_that_the_warmup_trains_alone(tmp_path):
    from maskpolicy.train.data import corpus_dataset, load_task
    from maskpolicy.train.head_warmup import warm_up_head
    from maskpolicy.train.models import load_masked_lm_reporting, load_model_tokenizer

    model, report = load_masked_lm_reporting("minilm-l6")
    assert report.new_parameters and all(k.startswith("cls.predictions.") for k in report.new_parameters)
    assert "pooler.dense.weight" in report.unused  # a sentence encoder's pooler has no place in a masked LM
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # decoder tied
    tokenizer = load_model_tokenizer("minilm-l6")
    dataset = corpus_dataset(tokenizer, load_task(PretrainConfig(**TINY)), 32)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    info = warm_up_head(model, report.new_parameters, dataset, tokenizer, steps=6, batch_size=8,
                        learning_rate=1e-3, seed=0, device="cpu")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("cls.predictions.") for k in changed)  # the body did not move
    assert "bert.embeddings.word_embeddings.weight" not in changed  # nor the tied decoder
    assert all(p.requires_grad for p in model.parameters())  # everything trains again afterwards
    assert info["steps"] == 6 and info["loss_last"] < info["loss_first"]


@needs_minilm
def test_pretraining_from_the_offline_encoder_records_the_warmup_and_resumes_without_it(tmp_path, capsys):
    out = tmp_path / "run"
    options = {**TINY, "save_every": 1, "steps": 2, "head_warmup_steps": 3, "model": "minilm-l6"}
    config = PretrainConfig(out=str(out), **options)
    results = pretrain(config)
    printed = capsys.readouterr().out
    assert "newly initialised (not in the checkpoint): cls.predictions" in printed
    assert results["head_warmup"]["steps"] == 3 and results["head_warmup"]["new_parameters"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["config"]["model"] == "minilm-l6" and on_disk["head_warmup"]["steps"] == 3
    # The saved model is a complete masked LM: loading it again initialises nothing.
    from maskpolicy.train.models import load_masked_lm_reporting

    assert load_masked_lm_reporting(str(out / "model"))[1].new_parameters == []
    # A resumed run takes the warmed head from its checkpoint and does not warm up again.
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-000002")
    os.remove(out / "checkpoints" / "latest")
    resumed = pretrain(PretrainConfig(out=str(out), resume=True, **options))
    assert "warming them up" not in capsys.readouterr().out
    assert resumed["head_warmup"]["steps"] == 3 and resumed["resumed_from_step"] == 1


@needs_minilm
def test_classification_fine_tuning_from_the_encoder(cls_dir):
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.train.config import FinetuneConfig
    from maskpolicy.train.finetune import finetune_classifier
    from maskpolicy.train.models import load_masked_lm, load_model_tokenizer

    lm, tokenizer = load_masked_lm("minilm-l6"), load_model_tokenizer("minilm-l6")
    task = get_task(str(cls_dir))
    result = finetune_classifier(lm, tokenizer, task, FinetuneConfig(epochs=1, batch_size=4), max_length=16)
    assert 0.0 <= result["accuracy"] <= 1.0


@needs_minilm
def test_zero_steps_warm_up_the_head_only_and_save_a_complete_masked_lm(tmp_path):
    out = tmp_path / "general"
    results = pretrain(PretrainConfig(**{**TINY, "model": "minilm-l6", "steps": 0, "head_warmup_steps": 2,
                                         "out": str(out)}))
    assert results["steps"] == 0 and results["head_warmup"]["steps"] == 2
    assert not (out / "checkpoints").exists()  # no pre-training step, no checkpoint
    from maskpolicy.train.models import load_masked_lm_reporting

    assert load_masked_lm_reporting(str(out / "model"))[1].new_parameters == []


def test_the_pretrained_preset_of_the_real_suite(tmp_path, monkeypatch):
    """What ``bench --suite real --preset pretrained`` asks of the loop (faked cells: no training)."""
    from maskpolicy.benchmarks import real_suite, suites

    seen = {}

    def general_cell(config):
        seen["general"] = config
        return {"status": "done", "metrics": {"score": 0.3}, "train_seconds": 1.0,
                "head_warmup": {"steps": 200, "loss_first": 7.5, "loss_last": 6.0, "seconds": 90.0}}

    def run_grid(spec, root):
        seen.setdefault("specs", []).append(spec)
        cells = [{"task": t, "policy": p, "seed": s, "status": "done", "score": 0.5, "metrics": {"score": 0.5},
                  "history": []}
                 for t in spec.tasks for p in spec.policies for s in spec.seeds]
        return {"cells": cells, "learned": {}, "kinds": {t: "classification" for t in spec.tasks}}

    monkeypatch.setattr(real_suite, "check_data", lambda data_dir, tasks: "data")
    monkeypatch.setattr(real_suite, "pretrain_cell", general_cell)
    monkeypatch.setattr(real_suite, "run_grid", run_grid)
    monkeypatch.setattr(real_suite, "curve_plots", lambda *a, **k: [])
    monkeypatch.setattr(real_suite, "reach_rows", lambda *a, **k: [])
    real_suite.run_real(str(tmp_path), preset="pretrained", workers=1)
    general = seen["general"]
    assert general.model == "minilm-l6" and general.steps == 0 and general.head_warmup_steps == 200
    mr = seen["specs"][0]
    assert mr.pretrain_options["learning_rate"] == 1e-4 and mr.pretrain_options["model"].endswith("model")
    assert {"none", "random", "span", "pmi", "selective", "learned-supervised"} == set(mr.policies)
    assert len(mr.seeds) >= 3
    # Probes fall on evaluation steps, at least two of them along each run (the curves).
    probe_every = mr.pretrain_options["probe_every"]
    assert probe_every % (mr.steps // mr.eval_points) == 0 and mr.steps // probe_every >= 2
    assert mr.pretrain_options["probe"]["method"] == "linear"
    # SQuAD on its own schedule (memorising paragraphs needs more steps than MR/SST-2 get).
    squad = seen["specs"][1]
    assert squad.tasks == ["squad"] and squad.steps == 300 and squad.pretrain_options["learning_rate"] == 3e-4
    assert squad.pretrain_options["max_length"] == 128 and mr.steps == 60
    table = (tmp_path / "table.md").read_text()
    assert f"batch {real_suite.PRETRAINED['batch_size']}," in table and "1 epoch(s) on 3,000 sentences at 0.0001" in table
    assert "from pretrained minilm-l6" in table and "warmed up on WikiText-2 for 200 steps, body frozen" in table
    assert "--preset pretrained --out" in table
    assert "the SQuAD paragraphs for squad, 300 steps at lr 0.0003), batch 16" in table
    real_suite.run_real(str(tmp_path / "s"), preset="pretrained", workers=1, steps=20)
    assert [spec.steps for spec in seen["specs"][2:]] == [20, 20]  # --steps N: every grid N steps
    # --preset pretrained --quick is the preset's small form, recorded as such.
    monkeypatch.setattr(real_suite, "run_real", lambda out, preset, **kw: {"table": "", "out": out, "preset": preset})
    assert suites.run_suite("real", preset="pretrained", quick=True, out=str(tmp_path / "q"))["preset"] == \
        "pretrained-quick"
    from maskpolicy.benchmarks.report import preset_flag

    assert preset_flag("pretrained-quick") == " --preset pretrained --quick"


@pytest.mark.parametrize("preset", ["full", "quick", "gpu", "pretrained", "pretrained-quick"])
def test_every_real_preset_builds_valid_learning_and_fine_tuning_options(preset):
    """A preset's nested options are only read deep inside a cell: check them all up front."""
    from maskpolicy.benchmarks.real_suite import PRESETS
    from maskpolicy.meta.supervised import SupervisedConfig
    from maskpolicy.train.config import FinetuneConfig

    size = PRESETS[preset]
    SupervisedConfig(classifier={"model": "tiny", **size["classifier"]}, selective=size["selective"])
    FinetuneConfig(**size["finetune"])
    FinetuneConfig(**size["probe"])
