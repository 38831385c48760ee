"""The built-in synthetic world: invented entities, their facts, and cloze questions about them.

A seeded generator invents ``num_entities`` people, each with one value per relation
(birthplace, profession, colour, employer). The intermediate corpus states every fact in
``sentences_per_fact`` templated sentences with filler words around them (one passage per
sentence, so the answer sits at varying positions). The downstream task of a relation asks
closed-book cloze questions in the relation's first template: "Dravik was born in [BLANK] .".

Entities are split: questions about *training* entities may be used to learn a policy,
questions about *evaluation* entities measure the result; every entity's facts are in the
corpus. Gold answer spans mark the value inside the passages of the task's relation(s), so
``salient_span`` can serve as the oracle and a policy's answer recall is measurable.

Names: ``synthetic:birthplace`` (one relation) or ``synthetic`` (all relations). A
relation's corpus holds the sentences of that relation (every entity; the same sentences
in every task), unless ``whole_world_corpus`` asks for every relation's sentences.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from maskpolicy.policies.errors import ConfigError

from .base import BLANK, ClozeQuestion, Passage, Span, Task

# Templates: "{e}" = entity, "{v}" = value. The first one is the question phrasing.
TEMPLATES: dict[str, list[str]] = {
    "birthplace": [
        "{e} was born in {v} .",
        "the birthplace of {e} is {v} .",
        "{e} comes from the town of {v} .",
        "people say {e} grew up in {v} .",
        "{v} is where {e} was born .",
    ],
    "profession": [
        "{e} works as a {v} .",
        "by trade {e} is a {v} .",
        "the job of {e} is {v} .",
        "{e} earns a living as a {v} .",
        "everyone knows {e} as the {v} .",
    ],
    "colour": [
        "the favourite colour of {e} is {v} .",
        "{e} likes the colour {v} best .",
        "{e} always wears {v} .",
        "{v} is the colour that {e} loves .",
        "the house of {e} is painted {v} .",
    ],
    "employer": [
        "{e} is employed by {v} .",
        "{e} works for the company {v} .",
        "the employer of {e} is {v} .",
        "{v} pays the wages of {e} .",
        "{e} has a job at {v} .",
    ],
}

VALUES: dict[str, list[str]] = {
    "birthplace": ["Velmora", "Ostrava", "Kelbrin", "Tarnis", "Ulvade", "Morrow", "Pesk", "Aldun", "Brisca", "Corvel",
                   "Dunmere", "Ebbra", "Falkon", "Gorse", "Halden", "Ister", "Jorvik", "Lunde", "Merrin", "Norwen"],
    "profession": ["baker", "sailor", "painter", "farmer", "doctor", "teacher", "mason", "weaver", "miner", "singer",
                   "tailor", "hunter", "potter", "judge", "cook", "pilot", "clerk", "nurse", "smith", "poet"],
    "colour": ["red", "blue", "green", "yellow", "purple", "orange", "teal", "grey", "brown", "pink", "white", "black",
               "violet", "amber", "crimson", "silver"],
    "employer": ["Quorvex", "Balcor", "Zentra", "Mirelle", "Oxbane", "Pyrell", "Sundra", "Telvo", "Umbrix", "Vantor",
                 "Wexley", "Yarrow", "Castell", "Drummon", "Fennick", "Grisham", "Harlan", "Korrin"],
}

# Fillers around a fact; the empty strings make "no filler" the most common choice.
PREFIXES = ["", "", "", "as the old records show ,", "it is said that", "in this story", "as far as we know ,",
            "according to the village ,", "some years ago", "without a doubt"]
SUFFIXES = ["", "", "", "long ago", "so they say", "in those days", "as expected", "indeed"]

# answer_words=2: each value gets a second word, before or after it ("Velmora Ford").
QUALIFIERS: dict[str, tuple[str, list[str]]] = {
    "birthplace": ("after", ["Ford", "Cross", "Marsh", "Mouth", "Hythe", "Barrow"]),
    "profession": ("before", ["master", "junior", "head", "night", "chief", "royal"]),
    "colour": ("before", ["dark", "light", "pale", "deep", "bright", "dull"]),
    "employer": ("after", ["Group", "Works", "Trading", "Holdings", "Mills", "Guild"]),
}

_ONSETS = ["br", "dr", "k", "m", "t", "v", "l", "s", "th", "gr", "z", "r", "n", "p", "h", "f", "j", "w"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io"]
_CODAS = ["", "n", "k", "th", "r", "l", "s", "m", "x", "v"]


MAX_ENTITIES = 20_000  # the syllable generator has ~10x as many distinct names


@dataclass
class SyntheticWorldConfig:
    """The world's size and split. ``relations`` = the facts stated in the corpus."""

    seed: int = 0
    num_entities: int = 200
    eval_fraction: float = 0.5
    sentences_per_fact: int = 3
    relations: tuple[str, ...] = ("birthplace", "profession", "colour", "employer")
    whole_world_corpus: bool = False
    """A relation's task pre-trains on the sentences of that relation only (default), or on
    the whole world (every relation; 4x the text, the answers a quarter of it)."""
    facts_per_passage: int = 1
    """Harder variant: a passage states this many facts about one entity, one sentence each,
    the entity named in every sentence (so the subject recurs next to every value). Each
    round ``j < sentences_per_fact`` shuffles the j-th sentences of every relation and cuts
    them into passages of this many (the last of a round may be shorter when it does not
    divide the number of relations); a relation's task keeps the passages stating its fact."""
    answer_words: int = 1
    """Harder variant: 2 makes every value two words ("Velmora Ford", "master baker", "dark
    red", "Quorvex Group"): answers of two tokens that must both be masked and recalled."""
    question_fillers: bool = False
    """Questions are the relation's first template with no filler (default: the corpus's
    fillers never appear in a question); True prefixes each with a corpus filler phrase."""

    def __post_init__(self) -> None:
        if isinstance(self.relations, str):
            self.relations = (self.relations,)
        self.relations = tuple(dict.fromkeys(self.relations))  # drop repeats, keep order
        unknown = [r for r in self.relations if r not in TEMPLATES]
        if unknown or not self.relations:
            raise ConfigError(f"unknown relation(s) {unknown}; known: {', '.join(TEMPLATES)}")
        if not isinstance(self.num_entities, int) or not 4 <= self.num_entities <= MAX_ENTITIES:
            raise ConfigError(f"num_entities must be an int in [4, {MAX_ENTITIES}], got {self.num_entities!r}")
        if not isinstance(self.eval_fraction, (int, float)) or not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in (0, 1), got {self.eval_fraction!r}")
        most = min(len(t) for t in TEMPLATES.values())
        if not isinstance(self.sentences_per_fact, int) or not 1 <= self.sentences_per_fact <= most:
            raise ConfigError(f"sentences_per_fact must be in [1, {most}], got {self.sentences_per_fact!r}")
        if (isinstance(self.facts_per_passage, bool) or not isinstance(self.facts_per_passage, int)
                or not 1 <= self.facts_per_passage <= len(self.relations)):
            raise ConfigError(f"facts_per_passage must be an int in [1, {len(self.relations)}] (the number of "
                              f"relations), got {self.facts_per_passage!r}")
        if self.answer_words not in (1, 2) or isinstance(self.answer_words, bool):
            raise ConfigError(f"answer_words must be 1 or 2, got {self.answer_words!r}")
        if not isinstance(self.question_fillers, bool):
            raise ConfigError(f"question_fillers must be true or false, got {self.question_fillers!r}")


@dataclass
class World:
    """The generated facts. Entity names double as entity ids (``Passage.key``)."""

    entities: list[str]
    facts: dict[str, dict[str, str]]  # entity -> relation -> value
    eval_entities: set[str]


def invent_names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    """``n`` distinct capitalised names from two onset+vowel syllables and a coda ("Dravik"),
    none equal (case-insensitively) to a word in ``taken``."""
    names: list[str] = []
    seen = {t.lower() for t in taken}
    while len(names) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)
        if len(name) >= 4 and name not in seen:
            seen.add(name)
            names.append(name.capitalize())
    return names


def build_world(config: SyntheticWorldConfig) -> World:
    rng = random.Random(config.seed)
    reserved = {w for vals in VALUES.values() for w in vals}
    reserved |= {w for ts in TEMPLATES.values() for t in ts for w in t.split()}
    reserved |= {w for phrase in PREFIXES + SUFFIXES for w in phrase.split()}
    if config.answer_words == 2:  # only then, so that default worlds stay exactly as they were
        reserved |= {w for _, words in QUALIFIERS.values() for w in words}
    entities = invent_names(rng, config.num_entities, reserved)
    facts = {e: {r: rng.choice(VALUES[r]) for r in TEMPLATES} for e in entities}
    if config.answer_words == 2:  # own stream: the one-word facts above are the same as in the default world
        qrng = random.Random(f"synthetic-qualifiers-{config.seed}")
        for e in entities:
            for r, (where, words) in QUALIFIERS.items():
                q = qrng.choice(words)
                facts[e][r] = f"{facts[e][r]} {q}" if where == "after" else f"{q} {facts[e][r]}"
    shuffled = entities[:]
    rng.shuffle(shuffled)
    n_eval = max(1, min(len(entities) - 1, round(config.eval_fraction * len(entities))))
    return World(entities, facts, set(shuffled[:n_eval]))


def _sentence(rng: random.Random, template: str, entity: str, value: str) -> tuple[str, int, int]:
    """(text, start, end) with text[start:end] == value."""
    prefix, suffix = rng.choice(PREFIXES), rng.choice(SUFFIXES)
    body = template
    if suffix:
        body = body[:-2] + " " + suffix + " ." if body.endswith(" .") else body + " " + suffix
    text = (prefix + " " + body).strip() if prefix else body
    head, tail = text.split("{v}")
    head = head.replace("{e}", entity)
    start = len(head)
    text = head + value + tail.replace("{e}", entity)
    return text, start, start + len(value)


def _passage_groups(sentences: dict[str, list[tuple[str, int, int]]], config: SyntheticWorldConfig,
                    rng: random.Random) -> list[list[tuple[str, tuple[str, int, int]]]]:
    """One entity's sentences grouped into passages, as (relation, sentence) lists.

    One fact per passage (default): every sentence alone, relation by relation. Else each
    round j shuffles the j-th sentence of every relation and cuts the round into groups of
    ``facts_per_passage``, so a passage never states the same relation twice."""
    if config.facts_per_passage == 1:
        return [[(rel, s)] for rel, items in sentences.items() for s in items]
    groups = []
    for j in range(config.sentences_per_fact):
        round_ = [(rel, items[j]) for rel, items in sentences.items()]
        rng.shuffle(round_)
        groups.extend(round_[i:i + config.facts_per_passage] for i in range(0, len(round_), config.facts_per_passage))
    return groups


def build_synthetic_task(relation: str | None = None, config: SyntheticWorldConfig | None = None) -> Task:
    config = config or SyntheticWorldConfig()
    if relation is not None and relation not in config.relations:
        raise ConfigError(f"unknown synthetic relation {relation!r}; known: {', '.join(config.relations)}")
    asked = [relation] if relation else list(config.relations)
    world = build_world(config)
    rng = random.Random(f"synthetic-corpus-{config.seed}")  # independent of the world's stream
    corpus: list[Passage] = []
    # The tokenizer is the world's, not the task's: every relation of one world gets the
    # same vocabulary, so policies transfer between relations.
    world_texts: list[str] = []
    passage_rng = random.Random(f"synthetic-passages-{config.seed}")  # own stream: defaults unchanged
    for entity in world.entities:
        split = "eval" if entity in world.eval_entities else "train"
        sentences: dict[str, list[tuple[str, int, int]]] = {}  # relation -> (text, value start, end)
        for rel in config.relations:
            value = world.facts[entity][rel]
            world_texts.append(TEMPLATES[rel][0].replace("{e}", entity).replace("{v}", " "))
            sentences[rel] = [_sentence(rng, t, entity, value) for t in rng.sample(TEMPLATES[rel], config.sentences_per_fact)]
            world_texts.extend(text for text, _, _ in sentences[rel])
        for group in _passage_groups(sentences, config, passage_rng):
            if not (config.whole_world_corpus or any(rel in asked for rel, _ in group)):
                continue
            parts, spans, offset = [], [], 0
            for rel, (text, start, end) in group:
                if rel in asked:
                    spans.append(Span(offset + start, offset + end, split))
                parts.append(text)
                offset += len(text) + 1
            corpus.append(Passage(" ".join(parts), spans, key=entity))
    world_texts.extend(v for rel in config.relations for v in VALUES[rel])
    rng.shuffle(corpus)
    train, evaluation = [], []
    question_rng = random.Random(f"synthetic-questions-{config.seed}")
    fillers = [p for p in PREFIXES if p]
    for rel in asked:
        question = TEMPLATES[rel][0]
        for entity in world.entities:
            text = question.replace("{e}", entity).replace("{v}", BLANK)
            if config.question_fillers:
                text = f"{question_rng.choice(fillers)} {text}"
            q = ClozeQuestion(text, [world.facts[entity][rel]], key=entity)
            (evaluation if entity in world.eval_entities else train).append(q)
    name = f"synthetic:{relation}" if relation else "synthetic"
    return Task(
        name=name,
        kind="cloze",
        corpus=corpus,
        train=train,
        eval=evaluation,
        description=(f"synthetic world (seed {config.seed}): {len(world.entities)} entities, "
                     f"{len(config.relations)} relations, {len(corpus)} corpus sentences; questions about "
                     f"{', '.join(asked)}: {len(train)} train / {len(evaluation)} eval (disjoint entities)"),
        tokenizer_texts=world_texts,
    )
