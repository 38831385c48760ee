"""What sampled masks cover (meta/mask_profile.py), on a small dense synthetic world."""
from __future__ import annotations

import pytest

from maskpolicy.meta.mask_profile import mask_profile
from maskpolicy.policies import MaskingConfig, get_policy
from maskpolicy.tasks.registry import get_task
from maskpolicy.tasks.tokenizer import tokenizer_for_task

DENSE = dict(num_entities=24, facts_per_passage=3, answer_words=2, relations=["birthplace", "profession", "employer"])


@pytest.fixture(scope="module")
def world():
    task = get_task("synthetic:birthplace", **DENSE)
    return task, tokenizer_for_task(task, vocab_size=2000)


def test_gold_oracle_masks_answers_and_leaves_the_subject(world):
    task, tok = world
    oracle = mask_profile(get_policy("salient_span", tok), tok, task, MaskingConfig(), max_length=64)
    assert oracle["answer_masked"] == 1.0 and oracle["answer_whole"] == 1.0
    assert oracle["key_masked"] == 0.0 and oracle["other_masked"] == 0.0  # fill "none": the spans only
    filled = mask_profile(get_policy("salient_span", tok), tok, task, MaskingConfig(fill="ranking"), max_length=64)
    assert filled["masks_per_row"] > oracle["masks_per_row"]  # the budget filled (uniformly: zero-probability tail)
    assert 0.0 < filled["key_masked"] < 0.3


def test_a_policy_that_masks_names_hides_the_subject(world):
    task, tok = world
    # Without gold spans salient_span masks capitalised runs: the entity's name in every
    # sentence as well as the answers.
    names = mask_profile(get_policy("salient_span", tok, use_gold_spans=False), tok, task, MaskingConfig(), max_length=64)
    rand = mask_profile(get_policy("random", tok), tok, task, MaskingConfig(), max_length=64, draws=5)
    assert names["key_masked"] > rand["key_masked"] + 0.2
    assert names["key_masked_with_answer"] is not None
    # random masks every kind of token at about the budget share
    for key in ("answer_masked", "key_masked", "other_masked"):
        assert rand[key] == pytest.approx(0.15, abs=0.06), key
    assert rand["passages"] == 12 * 3 and rand["fill"] == "none"


def test_no_answer_spans_no_profile(world):
    task, tok = world
    plain = type(task)(name="plain", kind="cloze", corpus=[type(p)(p.text, [], p.key) for p in task.corpus])
    assert mask_profile(get_policy("random", tok), tok, plain) == {}
