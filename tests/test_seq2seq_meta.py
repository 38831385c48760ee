"""maskpolicy learn with a seq2seq inner model (meta/seq2seq_inner.py through meta/bilevel.py):
a small synthetic world, both output formats, func and fd, the CLI and its bad input."""
from __future__ import annotations

import json

import pytest

from maskpolicy.cli import main
from maskpolicy.meta.learn import LearnConfig, learn
from maskpolicy.policies import LearnedPolicy
from maskpolicy.policies.errors import ConfigError

SMALL = dict(task="synthetic:birthplace", task_options={"num_entities": 24}, lm_warmup_steps=20, vocab_size=400,
             max_length=32, progress=False, arch="seq2seq")


@pytest.mark.parametrize("output,backend,validate", [("spans", "func", True), ("full", "fd", False)])
def test_seq2seq_meta_learning_beats_random_recall(tmp_path, output, backend, validate):
    out = tmp_path / "pol"
    report = learn(LearnConfig(method="meta", out=str(out), output=output,
                               validate={"steps": 4, "enabled": validate},
                               meta={"meta_steps": 40, "backend": backend, "eval_every": 20, "outer_batch": 8},
                               **SMALL))
    assert report["skipped_steps"] == 0 and len(report["history"]) == 2
    held = report["held_out"]
    print(f"{output}/{backend}: recall {held['recall']:.3f} (random {held['random_recall']:.3f})")
    assert held["recall"] > held["random_recall"] + 0.2  # from the seq2seq downstream loss alone
    assert report["config"]["output"] == output
    if validate:  # validation pre-trained seq2seq runs and scored the cloze as denoising
        validation = report["validation"]
        assert validation["baseline"]["answer_nll"] > 0 and "cloze_em" in validation["baseline"]
        assert {c["candidate"] for c in validation["candidates"]} == {"meta-step 20", "meta-step 40"}
    saved = json.loads((out / "policy_config.json").read_text())
    assert saved["metadata"]["learn_config"]["arch"] == "seq2seq"
    assert isinstance(LearnedPolicy.from_pretrained(str(out)), LearnedPolicy)


def test_seq2seq_meta_bad_input(tmp_path, capsys):
    with pytest.raises(ConfigError, match="masked LMs only"):
        learn(LearnConfig(method="meta", out=str(tmp_path / "c"), meta={"meta_steps": 2, "context": True,
                                                                        "outer_batch": 4},
                          validate={"enabled": False}, **SMALL))
    with pytest.raises(ConfigError, match="arch must be"):
        LearnConfig(arch="rnn")
    with pytest.raises(ConfigError, match="outer form"):
        LearnConfig(meta={"outer": "essay"})
    # An encoder-only checkpoint as the seq2seq inner model: one line, exit 2, nothing written.
    bert = tmp_path / "bert"
    assert main(["pretrain", "--task", "synthetic:birthplace", "--model", "tiny", "--steps", "1", "--out", str(bert),
                 "--no-evaluate", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "never"
    code = main(["learn", "--method", "meta", "--arch", "seq2seq", "--model", str(bert / "model"), "--out", str(out),
                 "--meta-steps", "2", "--quiet", "--no-validate"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "encoder-only" in err[0], err
    assert not out.exists()
