"""The budget fill is chosen per task: a learned policy carries the fill its validation chose,
masker, collators and ``pretrain`` use it unless told otherwise, and the validation's choice
is the choice longer runs make where the fills differ clearly."""
from __future__ import annotations

import json
import os

import pytest

from maskpolicy.meta.validate import ValidateConfig, validate_policies
from maskpolicy.policies import LearnedPolicy, Masker, MaskingCollator, MaskingConfig, get_policy
from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.policies.masker import resolve_fill
from maskpolicy.policies.sampler import DEFAULT_FILL

WORLD = dict(task="synthetic:birthplace", task_options={"num_entities": 24}, max_length=32)


def _blind(tok, **options):
    """A policy that selects nothing (p ~ 1e-14 everywhere): the fill alone decides its masks."""
    return LearnedPolicy(tok, init_bias=-8.0, temperature=0.25, **options).eval()


def test_the_config_wins_then_the_policy_then_the_default(tokenizer):
    tok = tokenizer
    batch = tok(["the cat sat on the mat with a hat and a dog in new york city today"] * 4, return_tensors="pt")
    masked = {}
    for policy_fill in (None, "random"):
        for config_fill in (None, "none", "random"):
            masker = Masker(_blind(tok, fill=policy_fill), MaskingConfig(fill=config_fill))
            masked[policy_fill, config_fill] = int(masker.select(batch["input_ids"], batch["attention_mask"])[0].sum())
    budget = masked["random", "random"]
    assert budget > 0
    assert masked[None, None] == (0 if DEFAULT_FILL == "none" else budget)
    assert masked["random", None] == budget  # the policy's own choice
    assert masked["random", "none"] == 0  # the config names one: it wins
    assert masked[None, "random"] == budget
    assert resolve_fill(MaskingConfig(), get_policy("random", tok)) == DEFAULT_FILL  # heuristics carry none


def test_the_fill_is_saved_with_the_policy_and_read_by_the_collator(tmp_path, tokenizer):
    tok = tokenizer
    _blind(tok, fill="random").save_pretrained(str(tmp_path / "p"), tokenizer=tok)
    loaded = LearnedPolicy.from_pretrained(str(tmp_path / "p"))
    assert loaded.fill == "random"
    examples = [tok("the cat sat on the mat with a hat today") for _ in range(3)]
    by_policy = MaskingCollator(tok, policy=str(tmp_path / "p"), seed=0)(examples)
    told = MaskingCollator(tok, policy=str(tmp_path / "p"), seed=0, fill="none")(examples)
    assert int((by_policy["labels"] != -100).sum()) > 0 and int((told["labels"] != -100).sum()) == 0
    # a policy saved before fills were recorded loads with none (the default applies)
    config_path = tmp_path / "p" / "policy_config.json"
    config = json.loads(config_path.read_text())
    del config["options"]["fill"]
    config_path.write_text(json.dumps(config))
    assert LearnedPolicy.from_pretrained(str(tmp_path / "p")).fill is None
    config["options"]["fill"] = "sideways"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="fill must be one of"):
        LearnedPolicy.from_pretrained(str(tmp_path / "p"))


def test_validate_fills_are_checked():
    with pytest.raises(ConfigError, match="fills must be some of"):
        ValidateConfig(fills=("none", "all"))
    assert ValidateConfig(fills="random").fills == ("random",)


def test_validation_chooses_the_fill_a_longer_run_would_choose(tmp_path):
    """Constructed so that the fills differ clearly: a policy that selects nothing trains
    nothing under ``none`` and trains like random masking under ``random``. The short
    validation must pick the fill that the 4x longer run scores better with."""
    from maskpolicy.meta.learn import LearnConfig
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.train.config import PretrainConfig
    from maskpolicy.train.evaluate import cloze_metrics
    from maskpolicy.train.models import load_masked_lm, load_tokenizer
    from maskpolicy.train.pretrain import pretrain

    start = tmp_path / "start"
    pretrain(PretrainConfig(**WORLD, vocab_size=400, policy="random", steps=3, out=str(start), eval_every=0,
                            save_every=0, evaluate=False, progress=False))
    tokenizer = load_tokenizer(str(start / "model"))
    task = get_task(WORLD["task"], **WORLD["task_options"])
    learn_config = LearnConfig(**WORLD, method="supervised", model=str(start / "model"), out=str(tmp_path / "unused"),
                               progress=False)
    validate = ValidateConfig(steps=10, batch_size=8, learning_rate=3e-3, fills=("none", "random"))
    result = validate_policies([("blind", _blind(tokenizer))], str(start / "model"), tokenizer, task, learn_config,
                               validate, MaskingConfig())
    by_fill = {row["fill"]: row for row in result["candidates"]}
    assert by_fill["none"]["masks"]["masks_per_row"] == 0  # nothing selected, nothing filled
    policy_dir = tmp_path / "blind"
    _blind(tokenizer).save_pretrained(str(policy_dir), tokenizer=tokenizer)
    longer = {}
    for fill in ("none", "random"):
        out = tmp_path / f"long-{fill}"
        pretrain(PretrainConfig(**WORLD, policy=str(policy_dir), model=str(start / "model"), steps=40, batch_size=8,
                                learning_rate=3e-3, masking={"fill": fill}, out=str(out), eval_every=0, save_every=0,
                                evaluate=False, progress=False))
        longer[fill] = cloze_metrics(load_masked_lm(str(out / "model")), tokenizer, task.train, 32)["answer_nll"]
    assert abs(longer["none"] - longer["random"]) > 0.05  # the fills differ clearly here
    assert result["selected_fill"] == min(longer, key=longer.get) == "random"
    assert os.path.isdir(start / "model")


def test_a_transferred_policy_fills_at_random_unless_the_run_names_a_fill(tmp_path):
    """The validated fill holds for the task it was validated on; on another task the budget
    is filled at random (never fewer masks than random), unless the run says otherwise."""
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task
    from maskpolicy.train.config import PretrainConfig
    from maskpolicy.train.pretrain import pretrain

    task = get_task("synthetic:birthplace", num_entities=24)
    tok = tokenizer_for_task(task, vocab_size=400)
    policy_dir = tmp_path / "policy"
    _blind(tok, fill="none").save_pretrained(str(policy_dir), tokenizer=tok,
                                             metadata={"learn_config": {"task": "synthetic:birthplace"}})
    used = {}
    for target, fill in (("synthetic:birthplace", None), ("synthetic:profession", None),
                         ("synthetic:profession", "none")):
        out = tmp_path / f"{target.split(':')[1]}-{fill}"
        result = pretrain(PretrainConfig(task=target, task_options={"num_entities": 24}, policy=str(policy_dir),
                                         masking={"fill": fill}, steps=1, batch_size=4, max_length=32, vocab_size=400,
                                         out=str(out),
                                         eval_every=0, save_every=0, evaluate=False, progress=False))
        used[target, fill] = (result["fill"], result["fill_transfer"])
    assert used["synthetic:birthplace", None] == ("none", None)
    assert used["synthetic:profession", None][0] == "random"
    assert "learned on synthetic:birthplace" in used["synthetic:profession", None][1]
    assert used["synthetic:profession", "none"] == ("none", None)
