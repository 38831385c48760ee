"""Seq2seq denoising pre-training (``--arch seq2seq``): both output formats end to end,
determinism and resume after a kill, the model kinds each arch accepts, bad input."""
from __future__ import annotations

import json
import os

import pytest
import torch

from maskpolicy.cli import main
from maskpolicy.policies.errors import ConfigError
from maskpolicy.train.config import PretrainConfig
from maskpolicy.train.pretrain import pretrain

SMALL = dict(task="synthetic:birthplace", task_options={"num_entities": 16}, steps=12, batch_size=8, arch="seq2seq",
             max_length=32, eval_every=4, save_every=4, progress=False, vocab_size=400, learning_rate=1e-3)


class Killed(Exception):
    pass


def _weights(path):
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model", "model.safetensors"))


@pytest.mark.parametrize("output", ["spans", "full"])
def test_both_output_formats_train_and_write_a_bart_model(tmp_path, output):
    from transformers import AutoModelForSeq2SeqLM

    results = pretrain(PretrainConfig(policy="salient_span", output=output, out=str(tmp_path / output), **SMALL))
    assert [h["step"] for h in results["history"]] == [4, 8, 12]
    assert all(0 <= h["denoise_accuracy"] <= 1 and h["loss"] > 0 for h in results["history"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / output / "model")
    assert type(model).__name__ == "BartForConditionalGeneration" and model.config.encoder_layers == 2
    saved = json.loads((tmp_path / output / "model" / "maskpolicy_run.json").read_text())
    assert saved["config"]["arch"] == "seq2seq" and saved["config"]["output"] == output


def test_same_seed_same_run_and_resume_after_kill_matches(tmp_path):
    config = dict(policy="span", output="full", **SMALL)
    full = pretrain(PretrainConfig(out=str(tmp_path / "full"), **config))

    def kill_at_6(step, history):
        if step == 6:
            raise Killed()

    with pytest.raises(Killed):
        pretrain(PretrainConfig(out=str(tmp_path / "killed"), **config), on_step=kill_at_6)
    resumed = pretrain(PretrainConfig(out=str(tmp_path / "killed"), resume=True, **config))
    assert resumed["history"] == full["history"] and resumed["metrics"] == full["metrics"]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = pretrain(PretrainConfig(out=str(tmp_path / "other"), **{**config, "output": "spans"}))
    assert other["history"] != full["history"]
    with pytest.raises(ConfigError, match="output"):  # the output format defines the run
        pretrain(PretrainConfig(out=str(tmp_path / "killed"), resume=True, **{**config, "output": "spans"}))


def test_intermediate_seq2seq_from_a_checkpoint_and_each_arch_refuses_the_other(tmp_path):
    general = tmp_path / "general"
    pretrain(PretrainConfig(policy="random", out=str(general), evaluate=False, **SMALL))
    again = pretrain(PretrainConfig(policy="salient_span", model=str(general / "model"), out=str(tmp_path / "inter"),
                                    **{k: v for k, v in SMALL.items() if k != "vocab_size"}))
    assert again["steps"] == 12
    mlm = pretrain(PretrainConfig(policy="random", out=str(tmp_path / "mlm"), evaluate=False,
                                  **{**SMALL, "arch": "mlm", "steps": 2}))
    assert mlm["steps"] == 2
    with pytest.raises(ConfigError, match="encoder-only bert model; --arch seq2seq needs an encoder-decoder"):
        pretrain(PretrainConfig(policy="random", model=str(tmp_path / "mlm" / "model"), out=str(tmp_path / "x"), **SMALL))
    with pytest.raises(ConfigError, match="encoder-decoder \\(bart\\) model; masked-LM pre-training needs an encoder"):
        pretrain(PretrainConfig(policy="random", model=str(general / "model"), out=str(tmp_path / "y"),
                                **{**SMALL, "arch": "mlm"}))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("argv, message", [
    (["--output", "spans"], "--output sets the decoder target of seq2seq pre-training: it needs --arch seq2seq"),
    (["--arch", "seq2seq", "--output", "tokens"], "argument --output: invalid choice: 'tokens'"),
    (["--arch", "seq2seq", "--model", "base"], "unknown seq2seq preset 'base'"),
    (["--arch", "seq2seq", "--probe-every", "2", "--eval-every", "2"], "not available with --arch seq2seq"),
])
def test_bad_seq2seq_options(tmp_path, capsys, argv, message):
    code = main(["pretrain", "--task", "synthetic:birthplace", "--task-option", "num_entities=16", "--steps", "2",
                 "--vocab-size", "300", "--out", str(tmp_path / "o"), "--quiet", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_a_policy_learned_for_the_encoder_drives_seq2seq_pretraining(tmp_path):
    from maskpolicy.meta.learn import LearnConfig, learn

    policy = tmp_path / "policy"
    learn(LearnConfig.from_dict({"task": "synthetic:birthplace", "task_options": {"num_entities": 16}, "method": "supervised",
                                 "vocab_size": 400, "max_length": 32, "progress": False, "supervised": {"epochs": 3},
                                 "validate": {"enabled": False}, "out": str(policy)}))
    results = pretrain(PretrainConfig(policy=str(policy), output="spans", out=str(tmp_path / "run"), **SMALL))
    assert results["policy"]["name"] == "learned" and results["steps"] == 12
    # Another tokenizer (another vocabulary size): the policy refuses it, before any step.
    from maskpolicy.policies.errors import ArtifactError

    with pytest.raises(ArtifactError, match="was trained with another tokenizer"):
        pretrain(PretrainConfig(policy=str(policy), out=str(tmp_path / "other"), **{**SMALL, "vocab_size": 350}))
    assert not (tmp_path / "other" / "results.json").exists()
