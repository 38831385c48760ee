"""Tests for the span, salient_span and pmi heuristic policies (tiny WordPiece tokenizer)."""
from __future__ import annotations

import json
import random

import pytest
import torch

from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.policies.heuristics.pmi import PmiPolicy
from maskpolicy.policies.heuristics.salient_span import SalientSpanPolicy
from maskpolicy.policies.heuristics.span import SpanPolicy, word_ordinals
from maskpolicy.policies.pmi_table import PmiTable, build_pmi_table
from maskpolicy.policies.registry import get_policy
from maskpolicy.policies.sampler import sample_mask
from maskpolicy.tasks.tokenizer import build_tokenizer as build_wordpiece

NAMES = ["Velmora", "Tarsk", "Olvenhal", "Brisca", "Quenlow"]
NOUNS = ["river", "market", "garden", "bridge", "tower", "school", "harbor", "museum", "forest", "valley"]
VERBS = ["visited", "painted", "described", "crossed", "praised", "left", "built", "saw"]
SUBJ = ["we", "they", "the farmers", "the children", "our guests", "the engineers"]
CITIES = ["paris", "london", "rome", "berlin", "madrid", "vienna", "oslo", "lisbon"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
RARE = ["zyxquorbat", "flimbertastic", "quazzlewort", "snorvendike"]  # split into pieces


def make_sentences(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        subj, verb, noun = rng.choice(SUBJ), rng.choice(VERBS), rng.choice(NOUNS)
        place = "new york" if i % 20 == 0 else rng.choice(CITIES)
        kind = i % 4
        if kind == 0:
            s = f"{subj} {verb} the {noun} in {place} ."
        elif kind == 1:
            s = f"Yesterday {subj} {verb} {rng.choice(NAMES)} City near the {noun} ."
        elif kind == 2:
            s = (f"On {rng.choice(MONTHS)} {rng.randint(1, 28)} , {rng.randint(1900, 2020)} "
                 f"{subj} {verb} {rng.randint(2, 999)} {noun}s .")
        else:
            s = f"{rng.choice(NAMES)} {verb} a {rng.choice(RARE)} {noun} in {place} ."
        out.append(s[0].upper() + s[1:])
    return out


def build_tokenizer(lowercase: bool = False):
    # The library's deterministic learner (tokenizers' WordPieceTrainer differs between processes).
    return build_wordpiece(make_sentences() + [" ".join(MONTHS)] * 30, vocab_size=300, lowercase=lowercase)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def encode(tokenizer, texts, max_length=None):
    enc = tokenizer(texts, padding=True, truncation=max_length is not None, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def tokens_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def find(row: list[int], sub: list[int]) -> int:
    for i in range(len(row) - len(sub) + 1):
        if row[i:i + len(sub)] == sub:
            return i
    raise AssertionError(f"{sub} not in {row}")


# ---- span ------------------------------------------------------------------------------
def test_span_lengths_follow_clipped_geometric(tokenizer):
    text = " ".join(make_sentences(60, seed=1))
    ids, att = encode(tokenizer, [text] * 64, max_length=256)
    policy = SpanPolicy(tokenizer, p=0.2, max_span_words=10)
    units = policy.units(ids, att, generator=torch.Generator().manual_seed(0))
    maskable = policy.maskable(ids, att)
    words = word_ordinals(policy.word_ids(ids, maskable))
    lengths = []
    for b in range(ids.shape[0]):
        u, w = units[b].tolist(), words[b].tolist()
        row_units = sorted(set(x for x in u if x >= 0))
        for word in set(x for x in w if x >= 0):  # whole words: all tokens of a word share a unit
            assert len({u[t] for t in range(len(w)) if w[t] == word}) == 1
        spans = [sorted({w[t] for t in range(len(u)) if u[t] == unit}) for unit in row_units]
        for s in spans:
            assert s == list(range(s[0], s[-1] + 1))  # consecutive words
            assert len(s) <= 10
        lengths += [len(s) for s in spans[1:-1]]  # first/last spans are cut by the row ends
    mean = sum(lengths) / len(lengths)
    assert abs(mean - policy.expected_span_words()) < 0.35, (mean, policy.expected_span_words())
    assert max(lengths) == 10 and min(lengths) == 1
    # The first span starts at a random offset: its length varies from row to row.
    first_len = [(words[b][units[b] == units[b][1]]).unique().numel() for b in range(ids.shape[0])]
    assert len(set(first_len)) > 2


def test_span_seeded_and_validated(tokenizer):
    ids, att = encode(tokenizer, make_sentences(4, seed=2))
    policy = get_policy("span", tokenizer, p=0.5, max_span_words=3)
    assert policy.config() == {"p": 0.5, "max_span_words": 3}
    a = policy.units(ids, att, generator=torch.Generator().manual_seed(3))
    b = policy.units(ids, att, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert ((a >= 0) == policy.maskable(ids, att)).all()
    probs = policy(ids, att)
    assert ((probs == 1) == policy.maskable(ids, att)).all()
    for bad in ({"p": 0.0}, {"p": 1.5}, {"max_span_words": 0}):
        with pytest.raises(ConfigError):
            get_policy("span", tokenizer, **bad)


# ---- salient_span ----------------------------------------------------------------------
def salient_units(tokenizer, policy, text):
    """Salient tokens of one text as a list of unit token lists, e.g. [["Velmora", "City"]]."""
    ids, att = encode(tokenizer, [text])
    probs, units = policy(ids, att), policy.units(ids, att)
    toks = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    spans: dict[int, list[str]] = {}
    for t in range(ids.shape[1]):
        if probs[0, t] == 1:
            spans.setdefault(int(units[0, t]), []).append(toks[t])
    for t in range(ids.shape[1]):  # salient units hold only salient tokens
        if int(units[0, t]) in spans:
            assert probs[0, t] == 1
    return [spans[k] for k in sorted(spans)]


def test_salient_heuristic_entities(tokenizer):
    policy = SalientSpanPolicy(tokenizer)
    assert salient_units(tokenizer, policy, "Yesterday we visited Velmora City near the river .") == [["Velmora", "City"]]
    assert salient_units(tokenizer, policy, "Velmora crossed the bridge .") == []  # sentence-initial
    assert salient_units(tokenizer, policy, "Velmora City crossed the bridge .") == [["City"]]
    assert salient_units(tokenizer, policy, "we left . Tarsk praised the river !") == []


def test_salient_heuristic_numbers_and_dates(tokenizer):
    policy = SalientSpanPolicy(tokenizer)
    assert salient_units(tokenizer, policy, "In 1987 the tower fell .") == [["19", "##8", "##7"]]
    assert salient_units(tokenizer, policy, "On March 3 , 1987 we saw 42 towers .") == [
        ["March", "3", ",", "19", "##8", "##7"], ["4", "##2"]]
    assert salient_units(tokenizer, policy, "we saw 1,000 towers on 3 December 1999 .") == [
        ["1", ",", "0", "##0", "##0"], ["3", "December", "19", "##9", "##9"]]


def test_salient_gold_spans_get_the_mask(tokenizer):
    texts = ["we visited the river in paris near the tower .", "Yesterday we visited Velmora City ."]
    ids, att = encode(tokenizer, texts)
    spans = torch.full_like(ids, -1)
    row = ids[0].tolist()
    for k, phrase in enumerate(["the river", "paris"]):
        sub = tokens_of(tokenizer, phrase)
        s = find(row, sub)
        spans[0, s:s + len(sub)] = 7 + k  # arbitrary span indices
    policy = get_policy("salient_span", tokenizer)
    probs = policy(ids, att, span_ids=spans)
    units = policy.units(ids, att, span_ids=spans)
    maskable = policy.maskable(ids, att)
    assert torch.equal(probs[0] == 1, spans[0] >= 0)
    assert (probs[1] == 1).sum() > 0  # row without spans falls back to the heuristic
    in_span = spans >= 0
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        mask = sample_mask(probs, maskable, 0.45, units=units, generator=g)  # budget 5 >= 4 span tokens
        assert mask[0][in_span[0]].all()
        exact = sample_mask(probs, maskable, 0.45, units=units, generator=g, fill_zero=False)
        assert torch.equal(exact[0], in_span[0])
    ignore = SalientSpanPolicy(tokenizer, use_gold_spans=False, background=0.1)
    probs = ignore(ids, att, span_ids=spans)
    assert (probs[0][maskable[0]] == 0.1).all()  # no salient words in row 0: all background
    with pytest.raises(ConfigError):
        SalientSpanPolicy(tokenizer, background=2.0)


def test_salient_uncased_finds_only_numbers_and_dates():
    tokenizer = build_tokenizer(lowercase=True)
    policy = SalientSpanPolicy(tokenizer)
    assert not policy.cased
    assert salient_units(tokenizer, policy, "yesterday we visited velmora city on march 3 , 1987 .") == [
        ["march", "3", ",", "19", "##8", "##7"]]
    assert salient_units(tokenizer, policy, "we may go in march .") == []  # a month alone is no date


# ---- pmi -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pmi_table(tokenizer):
    enc = tokenizer(make_sentences())
    word_ids = [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(enc["input_ids"]))]
    return build_pmi_table(enc["input_ids"], word_ids, policy_vocab(tokenizer), max_n=3, min_count=5)


def policy_vocab(tokenizer):
    from maskpolicy.policies.vocab import VocabInfo

    return VocabInfo.from_tokenizer(tokenizer)


def test_pmi_table_finds_collocation(tokenizer, pmi_table):
    best = max(pmi_table.ngrams, key=pmi_table.ngrams.get)
    assert list(best) == tokens_of(tokenizer, "new york")
    assert all(tokenizer.sep_token_id not in k and tokenizer.cls_token_id not in k for k in pmi_table.ngrams)
    assert all(tokenizer.convert_tokens_to_ids(".") not in k for k in pmi_table.ngrams)  # punctuation
    assert pmi_table.fingerprint == policy_vocab(tokenizer).fingerprint and pmi_table.num_passages == 400


def test_pmi_table_save_load_and_errors(tokenizer, pmi_table, tmp_path):
    path = tmp_path / "pmi.json"
    pmi_table.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["pmi.json"]  # no temporary file left
    loaded = PmiTable.load(path)
    assert loaded.ngrams == pytest.approx(pmi_table.ngrams)
    assert (loaded.max_n, loaded.min_count, loaded.fingerprint) == (3, 5, pmi_table.fingerprint)
    policy = get_policy("pmi", tokenizer, table=str(path))
    assert policy.config() == {"table": str(path)}
    with pytest.raises(ArtifactError, match="not found"):
        PmiTable.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        PmiTable.load(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"format": "maskpolicy-pmi-table/1", "ngrams": []}))
    with pytest.raises(ArtifactError, match="fingerprint"):
        PmiTable.load(tmp_path / "partial.json")
    other = PmiTable(dict(pmi_table.ngrams), 3, 5, "0" * 16, 1)
    with pytest.raises(ConfigError, match="another tokenizer"):
        PmiPolicy(tokenizer, table=other)
    with pytest.raises(ConfigError, match="maskpolicy pmi"):
        get_policy("pmi", tokenizer)


def test_pmi_policy_keeps_ngram_whole(tokenizer, pmi_table):
    policy = PmiPolicy(tokenizer, table=pmi_table)
    assert policy.config() == {"table": "<in-memory>"}
    texts = ["we saw the tower of new york .", "they built a new york bridge in paris near the river ."]
    ids, att = encode(tokenizer, texts)
    units = policy.units(ids, att)
    maskable = policy.maskable(ids, att)
    words = policy.word_ids(ids, maskable)
    probs = policy(ids, att)
    sub = tokens_of(tokenizer, "new york")
    where = [find(ids[b].tolist(), sub) for b in range(2)]
    for b, s in enumerate(where):
        assert len(set(units[b, s:s + len(sub)].tolist())) == 1  # one unit ...
        assert (units[b] == units[b, s]).sum() == len(sub)  # ... holding exactly the n-gram
        for w in words[b][words[b] >= 0].unique():  # words are never split
            assert units[b][words[b] == w].unique().numel() == 1
    hits = 0
    for seed in range(40):
        mask = sample_mask(probs, maskable, 0.3, units=units, generator=torch.Generator().manual_seed(seed))
        for b, s in enumerate(where):
            span = mask[b, s:s + len(sub)]
            assert span.all() or not span.any()
            hits += int(span.all())
    assert hits > 0
    # Longer n-grams win: "in new york" is in the table and becomes one unit.
    longer = tokens_of(tokenizer, "in new york")
    assert tuple(longer) in pmi_table.ngrams
    ids, att = encode(tokenizer, ["we saw the tower in new york ."])
    units = policy.units(ids, att)[0]
    s = find(ids[0].tolist(), longer)
    assert (units == units[s]).nonzero().flatten().tolist() == list(range(s, s + len(longer)))
