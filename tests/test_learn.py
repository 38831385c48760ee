"""maskpolicy learn: meta-learning loop and the saved artifact, on a small synthetic world."""
from __future__ import annotations

import json

import pytest
import torch

import maskpolicy.meta.bilevel as bilevel
from maskpolicy.cli import main
from maskpolicy.meta.bilevel import MetaConfig, distill_targets
from maskpolicy.meta.learn import LearnConfig, learn
from maskpolicy.policies import LearnedPolicy, get_policy
from maskpolicy.policies.errors import ConfigError, MaskpolicyError

SMALL = dict(task="synthetic:birthplace", task_options={"num_entities": 24}, lm_warmup_steps=20, vocab_size=400,
             max_length=32, progress=False, validate={"steps": 4})


def test_distill_targets_pick_the_most_negative_hypergradients():
    g = torch.tensor([[-5.0, 0.1, -0.2, 0.0], [-1.0, -3.0, 2.0, 0.0]])
    candidates = torch.tensor([[True, True, True, False], [True, True, True, True]])
    # rate 0.3 of 7 candidates -> 2 positives: the two most negative (-5 and -3).
    assert distill_targets(g, candidates, 0.3, "share").tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    # Never a positive where masking would not help (g >= 0).
    assert distill_targets(torch.ones(1, 4), torch.ones(1, 4, dtype=torch.bool), 0.9, "share").sum() == 0


def test_split_targets_keep_only_the_clearly_separated_helpful_tokens():
    from maskpolicy.meta.bilevel import otsu_split

    assert otsu_split(torch.tensor([0.1, 0.2, 0.15, 5.0, 5.2])) == pytest.approx(5.0)
    assert otsu_split(torch.tensor([1.0, 1.0, 9.0])) == pytest.approx(9.0)
    # 10 candidates, rate 0.5 -> the share rule labels 5; two of them stand far above the rest.
    g = -torch.tensor([[4.0, 3.8, 0.3, 0.25, 0.2, 0.1, 0.05, 0.0, 0.0, 0.0]])
    g[0, 7:] = 0.5  # not helpful
    candidates = torch.ones_like(g, dtype=torch.bool)
    assert distill_targets(g, candidates, 0.5, "share").sum() == 5
    assert distill_targets(g, candidates, 0.5, "split").tolist() == [[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]]
    # Never more than the share: with rate 0.1 only the single most negative one.
    assert distill_targets(g, candidates, 0.1, "split").tolist() == [[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]]


@pytest.mark.parametrize("backend", ["func", "fd"])
def test_meta_learning_writes_a_loadable_policy_that_beats_random(tmp_path, backend):
    out = tmp_path / "pol"
    report = learn(LearnConfig(method="meta", out=str(out), meta={"meta_steps": 60, "backend": backend,
                                                                   "eval_every": 30, "outer_batch": 8}, **SMALL))
    assert report["skipped_steps"] == 0 and len(report["history"]) == 2
    held = report["held_out"]
    assert held["recall"] > held["random_recall"] + 0.2  # learned from the downstream loss alone
    saved = json.loads((out / "policy_config.json").read_text())
    assert saved["metadata"]["report"]["method"] == "meta"
    policy = get_policy(str(out), None)
    assert isinstance(policy, LearnedPolicy)


def test_nan_meta_step_is_skipped_and_reported(tmp_path, monkeypatch):
    real = bilevel.hypergradient
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MaskpolicyError("the outer loss is not finite")
        return real(*args, **kwargs)

    monkeypatch.setattr(bilevel, "hypergradient", flaky)
    report = learn(LearnConfig(method="meta", out=str(tmp_path / "p"), meta={"meta_steps": 4, "eval_every": 2,
                                                                           "outer_batch": 4}, **SMALL))
    assert report["skipped_steps"] == 1
    policy = LearnedPolicy.from_pretrained(str(tmp_path / "p"))
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_supervised_via_cli_and_show(tmp_path, capsys):
    out = tmp_path / "sup"
    code = main(["learn", "--task", "synthetic:birthplace", "--method", "supervised", "--out", str(out),
                 "--epochs", "5", "--quiet", "--validate-steps", "4", "--validate-fills", "none,random",
                 "--keep-candidates"])
    printed = capsys.readouterr().out
    assert code == 0 and "recall" in printed
    assert "validation (4 pre-training steps each" in printed and printed.count("<- kept") == 1
    assert "final, fill none:" in printed and "final, fill random:" in printed
    config = json.loads((out / "policy_config.json").read_text())
    chosen = config["options"]["fill"]
    assert chosen == config["metadata"]["report"]["validation"]["selected_fill"] in ("none", "random")
    kept = json.loads((out / "candidates" / "0-final" / "policy_config.json").read_text())
    assert kept["options"]["fill"] is None and [r["fill"] for r in kept["metadata"]["validation"]] == ["none", "random"]
    for given, used in ((None, chosen), ("ranking", "ranking")):  # the saved fill, unless --fill says otherwise
        run = tmp_path / f"run-{given}"
        argv = ["pretrain", "--task", "synthetic:birthplace", "--policy", str(out), "--out", str(run), "--steps", "1",
                "--batch-size", "4", "--no-evaluate", "--quiet"] + (["--fill", given] if given else [])
        assert main(argv) == 0
        assert json.loads((run / "results.json").read_text())["fill"] == used
    assert main(["show", "--policy", str(out), "--text", "people say Dravik grew up in Velmora ."]) == 0
    assert "learned" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--inner-steps", "0"], "steps"),
    (["--inner-lr", "0"], "lr"),
    (["--meta-steps", "0"], "meta_steps"),
])
def test_bad_meta_options_are_refused(tmp_path, capsys, argv, message):
    code = main(["learn", "--method", "meta", "--out", str(tmp_path / "x")] + argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("maskpolicy: error:") and message in err
    assert not (tmp_path / "x").exists()


def test_supervised_needs_a_supervision_signal(tmp_path, capsys):
    corpus = tmp_path / "task"
    corpus.mkdir()
    (corpus / "corpus.txt").write_text("nothing here mentions the answer\nnor here\n")
    (corpus / "q.jsonl").write_text(json.dumps({"question": "who is [BLANK] ?", "answers": ["Zed"]}) + "\n")
    (corpus / "task.yaml").write_text("name: nospan\ntype: cloze\ncorpus: corpus.txt\ntrain: q.jsonl\neval: q.jsonl\n")
    code = main(["learn", "--task", str(corpus), "--method", "supervised", "--out", str(tmp_path / "p"), "--quiet"])
    assert code == 2 and "no answer spans" in capsys.readouterr().err


def test_meta_config_validation():
    with pytest.raises(ConfigError):
        MetaConfig(backend="nope")
    with pytest.raises(ConfigError):
        MetaConfig(co_train="sometimes")
    for bad in (dict(targets="quartiles"), dict(split_margin=0.0), dict(split_margin=1.5), dict(neutral_target=1.0)):
        with pytest.raises(ConfigError):
            MetaConfig(**bad)
    assert (MetaConfig().targets, MetaConfig().split_margin, MetaConfig().balance, MetaConfig().context) == \
        ("three_way", 0.5, False, False)
    from maskpolicy.meta.validate import ValidateConfig

    for bad in (dict(steps=0), dict(candidates=0), dict(questions="dev"), dict(learning_rate=0)):
        with pytest.raises(ConfigError):
            ValidateConfig(**bad)


def test_a_policy_transfers_to_another_relation_of_the_same_world_only(tmp_path, capsys):
    """Relations of one world share a tokenizer, so a birthplace policy can drive profession's
    pre-training; a policy from another world (other invented names) is refused clearly."""
    out = tmp_path / "birthplace"
    world = ["--task-option", "num_entities=24", "--vocab-size", "400"]
    assert main(["learn", "--task", "synthetic:birthplace", "--method", "supervised", "--out", str(out),
                 "--epochs", "2", "--quiet", "--no-validate"] + world) == 0
    run = tmp_path / "run"
    code = main(["pretrain", "--task", "synthetic:profession", "--policy", str(out), "--out", str(run), "--steps", "2",
                 "--batch-size", "4", "--no-evaluate", "--quiet"] + world)
    assert code == 0, capsys.readouterr().err
    assert json.loads((run / "results.json").read_text())["steps"] == 2
    code = main(["pretrain", "--task", "synthetic:profession", "--policy", str(out), "--out", str(tmp_path / "other"),
                 "--steps", "2", "--no-evaluate", "--quiet", "--task-option", "num_entities=24",
                 "--task-option", "seed=1", "--vocab-size", "400"])
    assert code == 2 and "another tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "other" / "model").exists()


def test_validation_score_is_the_score_of_a_real_run(tmp_path):
    """The kept candidate's recorded answer NLL and EM are what an ordinary ``pretrain`` with
    that policy, from the same start, seed and steps, gives on the same questions: the saved
    policy carries the fill its validation chose, and ``pretrain`` uses it."""
    from maskpolicy.policies import LearnedPolicy
    from maskpolicy.policies.sampler import FILL_MODES
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.train.config import PretrainConfig
    from maskpolicy.train.evaluate import cloze_metrics
    from maskpolicy.train.models import load_masked_lm, load_tokenizer
    from maskpolicy.train.pretrain import pretrain

    world = dict(task="synthetic:birthplace", task_options={"num_entities": 24}, max_length=32)
    start = tmp_path / "start"
    pretrain(PretrainConfig(**world, vocab_size=400, policy="random", steps=3, out=str(start), eval_every=0,
                            save_every=0, evaluate=False, progress=False))
    out = tmp_path / "pol"
    report = learn(LearnConfig(**world, method="meta", model=str(start / "model"), out=str(out), progress=False,
                               meta={"meta_steps": 4, "outer_batch": 4, "eval_every": 4},
                               validate={"steps": 6, "candidates": 2, "batch_size": 8}))
    validation = report["validation"]
    assert [(c["candidate"], c["fill"]) for c in validation["candidates"]] == [
        (step, fill) for step in ("meta-step 2", "meta-step 4") for fill in FILL_MODES]
    kept = next(c for c in validation["candidates"] if c["candidate"] == validation["selected"]
                and c["fill"] == validation["selected_fill"])
    assert kept["answer_nll"] == min(c["answer_nll"] for c in validation["candidates"])
    assert LearnedPolicy.from_pretrained(str(out)).fill == validation["selected_fill"]
    assert 0.0 <= kept["masks"]["key_masked"] <= 1.0 and kept["masks"]["answer_masked"] is not None
    # Re-run by hand: the saved (kept) policy, the same start, steps, batch and seed.
    run = tmp_path / "by-hand"
    result = pretrain(PretrainConfig(**world, policy=str(out), model=str(start / "model"), steps=6, batch_size=8,
                                     learning_rate=1e-3, out=str(run), eval_every=0, save_every=0, evaluate=False,
                                     progress=False))
    assert result["fill"] == validation["selected_fill"]
    task = get_task(world["task"], **world["task_options"])
    again = cloze_metrics(load_masked_lm(str(run / "model")), load_tokenizer(str(start / "model")), task.train, 32)
    assert again["answer_nll"] == pytest.approx(kept["answer_nll"], abs=1e-5)
    assert again["cloze_em"] == pytest.approx(kept["cloze_em"], abs=1e-9)
    # The baseline is a real run too: random from the same start.
    base = tmp_path / "random"
    pretrain(PretrainConfig(**world, policy="random", model=str(start / "model"), steps=6, batch_size=8,
                            out=str(base), eval_every=0, save_every=0, evaluate=False, progress=False))
    random_nll = cloze_metrics(load_masked_lm(str(base / "model")), load_tokenizer(str(start / "model")), task.train, 32)
    assert random_nll["answer_nll"] == pytest.approx(validation["baseline"]["answer_nll"], abs=1e-5)


def test_validation_off_keeps_the_last_policy(tmp_path):
    report = learn(LearnConfig(method="meta", out=str(tmp_path / "p"), meta={"meta_steps": 4, "outer_batch": 4},
                               **{**SMALL, "validate": {"enabled": False}}))
    assert report["validation"] == {"skipped": "off (validate.enabled: false)"}


def test_meta_learning_prints_no_warm_up_evaluation_as_the_policys(tmp_path, capsys):
    """The LM warm-up is labelled as such and evaluates nothing; the lines that report scores
    are the policy's own (recall, validation)."""
    code = main(["learn", "--method", "meta", "--task", "synthetic:birthplace", "--task-option", "num_entities=24",
                 "--vocab-size", "400", "--max-length", "32", "--meta-steps", "2", "--validate-steps", "2",
                 "--out", str(tmp_path / "p")])
    out = capsys.readouterr()
    assert code == 0, out.err
    printed = out.out + out.err
    assert "LM warm-up: 50 steps of random-masking MLM" in printed and "not the policy" in printed
    assert "cloze_em=" not in printed  # no "step 50: cloze_em=..." from the warm-up
    assert "validation (2 pre-training steps each" in printed
