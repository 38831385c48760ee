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

from policies.errors import ConfigError

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
    entities = invent_names(rng, config.num_entities, reserved)
    facts = {e: {r: rng.choice(VALUES[r]) for r in TEMPLATES} for e in entities}
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
    for entity in world.entities:
        split = "eval" if entity in world.eval_entities else "train"
        for rel in config.relations:
            value = world.facts[entity][rel]
            world_texts.append(TEMPLATES[rel][0].replace("{e}", entity).replace("{v}", " "))
            for template in rng.sample(TEMPLATES[rel], config.sentences_per_fact):
                text, start, end = _sentence(rng, template, entity, value)
                world_texts.append(text)
                if rel in asked or config.whole_world_corpus:
                    spans = [Span(start, end, split)] if rel in asked else []
                    corpus.append(Passage(text, spans, key=entity))
    world_texts.extend(v for rel in config.relations for v in VALUES[rel])
    rng.shuffle(corpus)
    train, evaluation = [], []
    for rel in asked:
        question = TEMPLATES[rel][0]
        for entity in world.entities:
            text = question.replace("{e}", entity).replace("{v}", BLANK)
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
