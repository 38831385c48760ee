"""A family of synthetic worlds: each world's structure drawn at random from its world seed.

The built-in world (``synthetic.py``) was where the defaults were tuned; a default that only
holds there proves little. ``synthetic-family:<world>`` names one world of a family whose
*structure* is drawn from the world seed (``draw_knobs``), so that many worlds unlike each
other can be drawn, some to choose defaults on and others, never looked at while choosing,
to report them on (``maskpolicy bench --suite family``).

    get_task("synthetic-family:17")            # every relation of world 17 (questions about each)
    get_task("synthetic-family:17:mentor")     # one relation; the corpus is the whole world
    get_task("synthetic-family:17", num_entities=300)   # a knob fixed by hand, the rest drawn

The knobs and their ranges (``KNOB_RANGES``; each one drawn uniformly unless said):

- ``num_relations`` 2-4: relations drawn from the archetypes of ``family_lexicon.py``
  (person, place, organisation, year, count, date and thing answers); with
  ``confusable`` (drawn true half the time) the second relation has the same answer kind as
  the first (a mentor beside a spouse; a birth year beside a founding year) where one exists;
- ``facts_per_passage`` 1-min(3, relations): facts about one subject per passage;
- ``sentences_per_fact`` 2-4: how often each fact is stated;
- ``num_entities`` 120-240 (multiples of 20): subjects; half of them are evaluation subjects;
- ``person_words`` 1-2: subjects and person answers are one invented word or a first and a
  last name from the *same* inventories, so only the context tells a subject from an answer;
- ``name_words`` 1-3: words of place and organisation answers ("Kelbrin" .. "Upper Kelbrin Ford");
- ``date_words`` 2-3: "march 1847" or "3 march 1847";
- ``mention_full`` 0.2-1.0 and ``pronoun_share`` 0-1: how a passage names its subject again
  after the first sentence: the full name with probability ``mention_full``, else a pronoun
  (only where the subject opens the sentence) with probability ``pronoun_share`` or a partial
  name (the first or last name; the full name when names are one word);
- ``subject_first`` 0.2-0.9: the share of phrasings drawn with the subject first (the rest
  put the value, or a fronted phrase, before it: free word order);
- ``templates_per_relation`` 2-5: phrasings per relation in the corpus (of the archetype's 7);
- ``question_phrasing`` ``unseen`` (p 0.6) or ``corpus``: questions in phrasings the corpus
  never uses (the archetype's other phrasings), or in the first corpus phrasing;
- ``question_fillers`` (p 0.3): questions open with a filler phrase;
- ``distractor_rate`` 0-0.6: chance that a passage gets a sentence about another subject
  beside values of the world's answer kinds (names beside names, numbers beside numbers);
- ``filler_rate`` 0-0.7 and ``fillers`` 2-12: filler phrases around a sentence, from how many;
- ``value_pool`` 8-30: distinct answers per answer kind (things: at most 16);
- ``onsets`` 8-24: size of the inventory invented names are built from (fewer: names share
  more word pieces).

A world is a pure function of (world seed, data seed, overrides): the same arguments give the
same task byte for byte. Gold spans mark the asked relations' values (train / eval split by
subject), so ``salient_span`` is the oracle and answer recall is measurable.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields

from maskpolicy.policies.errors import ConfigError

from .base import BLANK, ClozeQuestion, Passage, Span, Task
from .family_lexicon import (ARCHETYPES, DISTRACTORS, FILLERS, MONTHS, ORG_WORDS, PLACE_WORDS, PRONOUNS,
                             invent_words)

PREFIX = "synthetic-family"
KIND_GROUPS = {"person": "person", "place": "place", "org": "org", "year": "number", "count": "number",
               "date": "number", "thing": "thing"}

# knob -> (low, high) for numbers drawn uniformly (ints inclusive), or the choices with their weights.
KNOB_RANGES: dict[str, object] = {
    "num_relations": (2, 4), "facts_per_passage": (1, 3), "sentences_per_fact": (2, 4), "num_entities": (120, 240),
    "person_words": (1, 2), "name_words": (1, 3), "date_words": (2, 3), "mention_full": (0.2, 1.0),
    "pronoun_share": (0.0, 1.0), "subject_first": (0.2, 0.9), "templates_per_relation": (2, 5),
    "question_phrasing": {"unseen": 0.6, "corpus": 0.4}, "question_fillers": {True: 0.3, False: 0.7},
    "confusable": {True: 0.5, False: 0.5}, "distractor_rate": (0.0, 0.6), "filler_rate": (0.0, 0.7),
    "fillers": (2, 12), "value_pool": (8, 30), "onsets": (8, 24),
}


@dataclass
class FamilyKnobs:
    """One world's structure (see the module doc for each knob's meaning and range)."""

    relations: tuple[str, ...]
    num_relations: int
    facts_per_passage: int
    sentences_per_fact: int
    num_entities: int
    person_words: int
    name_words: int
    date_words: int
    mention_full: float
    pronoun_share: float
    subject_first: float
    templates_per_relation: int
    question_phrasing: str
    question_fillers: bool
    confusable: bool
    distractor_rate: float
    filler_rate: float
    fillers: int
    value_pool: int
    onsets: int
    eval_fraction: float = 0.5

    def __post_init__(self) -> None:
        self.relations = tuple(self.relations)
        unknown = [r for r in self.relations if r not in ARCHETYPES]
        if unknown or not self.relations or len(set(self.relations)) != len(self.relations):
            raise ConfigError(f"family: relations must be distinct archetypes ({', '.join(ARCHETYPES)}), "
                              f"got {list(self.relations)}")
        self.num_relations = len(self.relations)
        for name, bounds in KNOB_RANGES.items():
            value = getattr(self, name)
            if isinstance(bounds, dict):
                if value not in bounds or type(value) is not type(next(iter(bounds))):
                    raise ConfigError(f"family: {name} must be one of {', '.join(map(str, bounds))}, got {value!r}")
                continue
            low, high = bounds
            if name == "num_relations":
                high = len(ARCHETYPES)
            if name == "facts_per_passage":
                high = self.num_relations
            number = (int,) if isinstance(low, int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, number) or not low <= value <= high:
                raise ConfigError(f"family: {name} must be {'an int' if number == (int,) else 'a number'} in "
                                  f"[{low}, {high}], got {value!r}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"family: eval_fraction must be in (0, 1), got {self.eval_fraction!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _draw(rng: random.Random, bounds):
    if isinstance(bounds, dict):
        return rng.choices(list(bounds), weights=list(bounds.values()))[0]
    low, high = bounds
    return rng.randint(low, high) if isinstance(low, int) else round(rng.uniform(low, high), 2)


def draw_knobs(world: int, **overrides) -> FamilyKnobs:
    """The knobs of world ``world``, with ``overrides`` (knob names) fixed by hand. Every knob
    has its own draw in a fixed order, so fixing one leaves the others as drawn."""
    if isinstance(world, bool) or not isinstance(world, int) or world < 0:
        raise ConfigError(f"family: the world seed must be an int >= 0, got {world!r}")
    names = {f.name for f in fields(FamilyKnobs)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"family: unknown knob(s) {', '.join(unknown)}; knobs: {', '.join(sorted(names))}")
    rng = random.Random(f"{PREFIX}-knobs-{world}")
    drawn = {name: _draw(rng, bounds) for name, bounds in KNOB_RANGES.items()}
    drawn["num_entities"] = 20 * round(drawn["num_entities"] / 20)
    n = overrides.get("num_relations", drawn["num_relations"])
    if "relations" in overrides:
        n = len(overrides["relations"])
    relations = rng.sample(sorted(ARCHETYPES), len(ARCHETYPES))[:max(1, n)]
    if overrides.get("confusable", drawn["confusable"]) and len(relations) > 1:
        group = KIND_GROUPS[ARCHETYPES[relations[0]].kind]
        alike = [a for a in sorted(ARCHETYPES) if KIND_GROUPS[ARCHETYPES[a].kind] == group and a != relations[0]]
        if alike:
            pick = alike[rng.randrange(len(alike))]
            relations = [relations[0], pick] + [r for r in relations[1:] if r != pick][:len(relations) - 2]
    drawn["relations"] = tuple(relations)
    drawn["facts_per_passage"] = min(drawn["facts_per_passage"], len(relations), 3)
    drawn.update(overrides)
    if "relations" in overrides or "num_relations" in overrides:
        drawn["facts_per_passage"] = min(drawn["facts_per_passage"], len(drawn["relations"]))
        drawn.update({k: v for k, v in overrides.items() if k == "facts_per_passage"})
    return FamilyKnobs(**drawn)


def parse_family_name(name: str) -> tuple[int, str | None]:
    """``synthetic-family:17`` -> (17, None); ``synthetic-family:17:mentor`` -> (17, "mentor")."""
    parts = name.split(":")
    if parts[0] != PREFIX or len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ConfigError(f"a family world is named {PREFIX}:<world seed>[:<relation>] (e.g. {PREFIX}:17 or "
                          f"{PREFIX}:17:mentor), got {name!r}")
    return int(parts[1]), (parts[2] if len(parts) == 3 else None)


def main_task(world: int, **overrides) -> str:
    """The task of a world's first relation: the one the family suite asks about."""
    return f"{PREFIX}:{world}:{draw_knobs(world, **overrides).relations[0]}"


@dataclass
class _Fact:
    relation: str
    text: str
    start: int  # value offsets in text
    end: int


class _WorldBuilder:
    """Draws one world's entities, values and sentences from the content stream."""

    def __init__(self, knobs: FamilyKnobs, rng: random.Random) -> None:
        self.k, self.rng = knobs, rng
        reserved = {w for a in ARCHETYPES.values() for p in a.phrasings for w in p.split()}
        reserved |= {w for f in FILLERS for w in f.split()} | set(MONTHS) | set(PRONOUNS)
        reserved |= {w for group in PLACE_WORDS + ORG_WORDS for w in group}
        reserved |= {w for a in ARCHETYPES.values() for w in a.things}
        self.reserved = reserved
        self.subjects, self.persons = self._people()
        self.pools = {kind: self._values(kind) for kind in sorted({ARCHETYPES[r].kind for r in knobs.relations})
                      if kind != "thing"}
        self.things = {r: list(ARCHETYPES[r].things[:]) for r in knobs.relations if ARCHETYPES[r].kind == "thing"}
        for values in self.things.values():
            rng.shuffle(values)
            del values[knobs.value_pool:]
        self.fillers = rng.sample(FILLERS, knobs.fillers)
        self.templates = {r: self._templates(r) for r in knobs.relations}

    def _people(self) -> tuple[list[str], list[str]]:
        k, rng = self.k, self.rng
        total = k.num_entities + k.value_pool
        if k.person_words == 1:
            names = invent_words(rng, total, k.onsets, self.reserved)
        else:  # first x last from shared inventories: subjects and person answers share words
            side = max(8, int(total ** 0.5) + 4)
            firsts = invent_words(rng, side, k.onsets, self.reserved)
            lasts = invent_words(rng, side, k.onsets, self.reserved | set(firsts), syllables=(2, 3))
            pairs = [f"{f} {last}" for f in firsts for last in lasts]
            names = rng.sample(pairs, total)
        self.reserved |= {w for n in names for w in n.split()}
        return names[:k.num_entities], names[k.num_entities:]

    def _values(self, kind: str) -> list[str]:
        k, rng = self.k, self.rng
        if kind == "person":
            return self.persons
        if kind in ("place", "org"):
            bases = invent_words(rng, k.value_pool, k.onsets, self.reserved, syllables=(2, 3))
            self.reserved |= set(bases)
            before, after = PLACE_WORDS if kind == "place" else ORG_WORDS
            out = []
            for base in bases:
                words = [base]
                if k.name_words >= 2:
                    words.append(rng.choice(after))
                if k.name_words == 3:
                    words.insert(0 if kind == "place" else 1, rng.choice(before))
                out.append(" ".join(words))
            return out
        if kind == "year":
            return [str(y) for y in rng.sample(range(1620, 1991), k.value_pool)]
        if kind == "count":
            return [str(c) for c in rng.sample(range(2, 96), k.value_pool)]
        # A list, not a set: a set's order follows the process's string hashing, and the world
        # must be the same in every process (a policy learned in one drives runs in another).
        dates: list[str] = []
        while len(dates) < k.value_pool:
            month, year = rng.choice(MONTHS), rng.randint(1620, 1990)
            date = f"{rng.randint(1, 28)} {month} {year}" if k.date_words == 3 else f"{month} {year}"
            if date not in dates:
                dates.append(date)
        return dates

    def _templates(self, relation: str) -> list[str]:
        """The corpus phrasings of ``relation``: ``templates_per_relation`` of the archetype's
        pool, each from the subject-first ones with probability ``subject_first``."""
        first = [p for p in ARCHETYPES[relation].phrasings if p.startswith("{e} ")]
        other = [p for p in ARCHETYPES[relation].phrasings if not p.startswith("{e} ")]
        chosen: list[str] = []
        while len(chosen) < self.k.templates_per_relation:
            pool = first if (self.rng.random() < self.k.subject_first and first) or not other else other
            pick = pool.pop(self.rng.randrange(len(pool)))
            chosen.append(pick)
        return chosen

    def value_of(self, relation: str, entity: str) -> str:
        kind = ARCHETYPES[relation].kind
        return self.rng.choice(self.things[relation] if kind == "thing" else self.pools[kind])

    def mention(self, template: str, entity: str, gender: str, first: bool) -> str:
        k, rng = self.k, self.rng
        if first or rng.random() < k.mention_full:
            return entity
        if template.startswith("{e} ") and rng.random() < k.pronoun_share:
            return gender
        parts = entity.split()
        return rng.choice(parts) if len(parts) > 1 else entity

    def sentence(self, template: str, subject: str, value: str) -> tuple[str, int, int]:
        """(text, value start, value end) with an optional filler before or after."""
        k, rng = self.k, self.rng
        filler = rng.choice(self.fillers) if rng.random() < k.filler_rate else ""
        body = template
        if filler and rng.random() < 0.5:
            body = f"{filler} {body}"
        elif filler:
            body = body[:-2] + f" {filler.rstrip(' ,')} ." if body.endswith(" .") else f"{body} {filler}"
        head, tail = body.split("{v}")
        head = head.replace("{e}", subject)
        return head + value + tail.replace("{e}", subject), len(head), len(head) + len(value)

    def distractor(self, entity: str) -> str:
        """A sentence about another subject beside a value of one of the world's kinds."""
        rng = self.rng
        relation = rng.choice(self.k.relations)
        kind = ARCHETYPES[relation].kind
        other = rng.choice([s for s in rng.sample(self.subjects, 2) if s != entity])
        text = rng.choice(DISTRACTORS[kind]).replace("{o}", other)
        return text.replace("{" + kind + "}", self.value_of(relation, other))


@dataclass
class FamilyWorld:
    knobs: FamilyKnobs
    subjects: list[str]
    eval_subjects: set[str]
    facts: dict[str, dict[str, str]]  # subject -> relation -> value
    passages: list[tuple[str, str, list[_Fact]]]  # (subject, text, facts with offsets in text)
    templates: dict[str, list[str]]  # relation -> the corpus phrasings
    question_phrasings: dict[str, list[str]]  # relation -> the question phrasings
    fillers: list[str]


def build_family_world(world: int, seed: int = 0, **overrides) -> FamilyWorld:
    """Draw world ``world`` (knobs) with content from the data ``seed``."""
    knobs = draw_knobs(world, **overrides)
    rng = random.Random(f"{PREFIX}-content-{world}-{seed}")
    b = _WorldBuilder(knobs, rng)
    facts = {s: {r: b.value_of(r, s) for r in knobs.relations} for s in b.subjects}
    genders = {s: rng.choice(PRONOUNS) for s in b.subjects}
    shuffled = b.subjects[:]
    rng.shuffle(shuffled)
    n_eval = max(1, min(len(shuffled) - 1, round(knobs.eval_fraction * len(shuffled))))
    eval_subjects = set(shuffled[:n_eval])
    passages = []
    for subject in b.subjects:
        # Round j states every relation once with its j-th phrasing (cycling through the
        # world's phrasings), shuffled and cut into passages of facts_per_passage facts.
        for j in range(knobs.sentences_per_fact):
            round_ = [(r, b.templates[r][(j + i) % len(b.templates[r])])
                      for i, r in enumerate(knobs.relations)]
            rng.shuffle(round_)
            for i in range(0, len(round_), knobs.facts_per_passage):
                passages.append((subject, _passage(b, subject, genders[subject], facts[subject],
                                                   round_[i:i + knobs.facts_per_passage])))
    rng.shuffle(passages)
    phrasings = {}
    for r in knobs.relations:
        unused = [p for p in ARCHETYPES[r].phrasings if p not in b.templates[r]]
        phrasings[r] = unused if knobs.question_phrasing == "unseen" else b.templates[r][:1]
    return FamilyWorld(knobs, b.subjects, eval_subjects, facts,
                       [(s, text, fs) for s, (text, fs) in passages], b.templates, phrasings, b.fillers)


def _passage(b: _WorldBuilder, subject: str, gender: str, facts: dict, group: list) -> tuple[str, list[_Fact]]:
    parts: list[tuple[str, _Fact | None]] = []
    for n, (relation, template) in enumerate(group):
        named = b.mention(template, subject, gender, first=n == 0)
        text, start, end = b.sentence(template, named, facts[relation])
        parts.append((text, _Fact(relation, text, start, end)))
    if b.rng.random() < b.k.distractor_rate:
        parts.insert(b.rng.randrange(len(parts) + 1), (b.distractor(subject), None))
    text, out, offset = [], [], 0
    for sentence, fact in parts:
        if fact is not None:
            out.append(_Fact(fact.relation, sentence, offset + fact.start, offset + fact.end))
        text.append(sentence)
        offset += len(sentence) + 1
    return " ".join(text), out


def build_family_task(world: int, relation: str | None = None, seed: int = 0, **overrides) -> Task:
    """The cloze task of ``relation`` (or of every relation) in world ``world``; the corpus is
    the whole world, gold spans mark the asked relations' values."""
    fam = build_family_world(world, seed, **overrides)
    knobs = fam.knobs
    if relation is not None and relation not in knobs.relations:
        raise ConfigError(f"world {world} of the family has relations {', '.join(knobs.relations)}; "
                          f"got {relation!r}")
    asked = [relation] if relation else list(knobs.relations)
    corpus = []
    for subject, text, facts in fam.passages:
        split = "eval" if subject in fam.eval_subjects else "train"
        spans = [Span(f.start, f.end, split) for f in facts if f.relation in asked]
        corpus.append(Passage(text, spans, key=subject))
    qrng = random.Random(f"{PREFIX}-questions-{world}-{seed}")
    train, evaluation = [], []
    for r in asked:
        for subject in fam.subjects:
            phrasing = qrng.choice(fam.question_phrasings[r])
            text = phrasing.replace("{e}", subject).replace("{v}", BLANK)
            if knobs.question_fillers:
                text = f"{qrng.choice(fam.fillers)} {text}"
            q = ClozeQuestion(text, [fam.facts[subject][r]], key=subject)
            (evaluation if subject in fam.eval_subjects else train).append(q)
    texts = [text for _, text, _ in fam.passages]
    texts += [p.replace("{e}", s).replace("{v}", " ") for r in knobs.relations
              for p in ARCHETYPES[r].phrasings for s in fam.subjects[:1]]
    texts += sorted({v for values in fam.facts.values() for v in values.values()}) + fam.subjects + fam.fillers
    name = f"{PREFIX}:{world}" + (f":{relation}" if relation else "")
    return Task(
        name=name, kind="cloze", corpus=corpus, train=train, eval=evaluation, tokenizer_texts=texts,
        description=(f"family world {world} (data seed {seed}): {len(fam.subjects)} subjects, relations "
                     f"{', '.join(knobs.relations)}, {knobs.facts_per_passage} fact(s) per passage, "
                     f"{len(corpus)} passages, questions {knobs.question_phrasing} phrasing; about "
                     f"{', '.join(asked)}: {len(train)} train / {len(evaluation)} eval (disjoint subjects)"),
    )
