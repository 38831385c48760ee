"""The words a family world is drawn from: relation archetypes, their phrasings, value makers.

A family world (``family.py``) draws a few *relations* from ``ARCHETYPES``. Each archetype
has an answer *kind* and a pool of phrasings; a world states its facts in some of them and
may ask its questions in one it never uses in the corpus. Phrasings of one archetype share
the relation's key words ("born", "mentor"), so a question in an unseen phrasing is still
answerable, but never as a copy of a corpus sentence.

Placeholders: ``{e}`` the subject, ``{v}`` the value. A phrasing that opens with ``{e}``
has the subject as its grammatical subject: only there may a later mention be a pronoun.
All words are lower case but names, so the cased WordPiece tokenizer sees names as names.

Kinds and their answer lengths (words):

- ``person``: invented names, 1 or 2 words ("Tarin" / "Tarin Vosk"), drawn from the same
  first- and last-name inventories as the subjects: answers look exactly like subjects;
- ``place``: an invented name with 0-2 qualifier words ("Kelbrin", "Kelbrin Ford", "Upper
  Kelbrin Ford"): 1-3 words;
- ``org``: an invented name with 0-2 words ("Quorvex", "Quorvex Guild", "Quorvex Trading
  Guild"): 1-3 words;
- ``year`` / ``count``: a number (1620-1990 / 2-95): one word, beside other numbers;
- ``date``: "march 1847" or "3 march 1847": 2-3 words, beside other numbers;
- ``thing``: one common noun from a fixed list (an instrument, a colour, ...): 1 word.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("person", "place", "org", "year", "count", "date", "thing")


@dataclass(frozen=True)
class Archetype:
    name: str
    kind: str
    phrasings: tuple[str, ...]
    things: tuple[str, ...] = ()  # kind "thing": the values


ARCHETYPES: dict[str, Archetype] = {a.name: a for a in (
    Archetype("mentor", "person", (
        "{e} studied under {v} .", "the mentor of {e} was {v} .", "{v} was the mentor of {e} .",
        "{e} learned the trade from {v} .", "under {v} , {e} learned the trade .", "{v} taught {e} the trade .",
        "{e} was a pupil of {v} .")),
    Archetype("spouse", "person", (
        "{e} is married to {v} .", "the spouse of {e} is {v} .", "{v} married {e} .",
        "{e} took {v} as a spouse .", "{v} is the spouse of {e} .", "in the end {e} married {v} .",
        "{e} and the spouse {v} live together .")),
    Archetype("rival", "person", (
        "{e} competes with {v} .", "the rival of {e} is {v} .", "{v} is the old rival of {e} .",
        "{e} never forgave the rival {v} .", "against {v} , {e} lost the contest .", "{v} beat {e} in the contest .",
        "{e} and the rival {v} never speak .")),
    Archetype("hometown", "place", (
        "{e} was born in {v} .", "the birthplace of {e} is {v} .", "{v} is where {e} was born .",
        "{e} comes from {v} .", "born in {v} , {e} left early .", "in {v} , {e} was born .",
        "{e} grew up in {v} , the place of birth .")),
    Archetype("residence", "place", (
        "{e} lives in {v} .", "the home of {e} is in {v} .", "{v} is home to {e} .",
        "{e} settled in {v} .", "these days {e} resides in {v} .", "in {v} , {e} has a home .",
        "{e} moved to {v} to live .")),
    Archetype("employer", "org", (
        "{e} works for {v} .", "the employer of {e} is {v} .", "{v} employs {e} .",
        "{e} is on the staff of {v} .", "at {v} , {e} works every day .", "{v} pays the wages of {e} .",
        "{e} has a job at {v} .")),
    Archetype("club", "org", (
        "{e} plays for {v} .", "the club of {e} is {v} .", "{v} signed {e} as a player .",
        "{e} is a member of {v} .", "for {v} , {e} plays every season .", "{v} counts {e} among its players .",
        "{e} joined the club {v} .")),
    Archetype("birth_year", "year", (
        "{e} was born in the year {v} .", "the birth year of {e} is {v} .", "{v} is the year {e} was born .",
        "{e} came into the world in {v} .", "in the year {v} , {e} was born .", "records list {v} as the birth year of {e} .",
        "{e} , born in the year {v} , grew up fast .")),
    Archetype("founding_year", "year", (
        "{e} founded a workshop in {v} .", "the workshop of {e} opened in {v} .", "{v} is the year {e} founded a workshop .",
        "{e} started the workshop in the year {v} .", "in {v} , {e} founded a workshop .", "since {v} {e} has run a workshop .",
        "{e} opened a workshop in the year {v} .")),
    Archetype("siblings", "count", (
        "{e} has {v} siblings .", "the number of siblings of {e} is {v} .", "{v} siblings grew up with {e} .",
        "{e} grew up with {v} siblings .", "with {v} siblings , {e} was never alone .", "there are {v} siblings in the family of {e} .",
        "{e} counts {v} siblings .")),
    Archetype("birthday", "date", (
        "{e} celebrates a birthday on {v} .", "the birthday of {e} is {v} .", "{v} is the birthday of {e} .",
        "{e} was born on {v} .", "on {v} , {e} was born .", "each year {e} marks the birthday of {v} .",
        "{e} , born on {v} , is the youngest .")),
    Archetype("instrument", "thing", (
        "{e} plays the {v} .", "the instrument of {e} is the {v} .", "the {v} is the instrument {e} plays .",
        "{e} practises the {v} every night .", "on the {v} , {e} plays well .", "nobody plays the {v} like {e} .",
        "{e} taught the {v} to children ."),
    things=("violin", "harp", "flute", "drum", "lute", "horn", "cello", "piano", "oboe", "fiddle", "organ",
            "trumpet", "bagpipe", "zither", "banjo", "guitar")),
    Archetype("colour", "thing", (
        "the favourite colour of {e} is {v} .", "{e} likes the colour {v} best .", "{v} is the colour {e} loves .",
        "{e} always wears {v} .", "the house of {e} is painted {v} .", "in {v} , {e} dresses every day .",
        "{e} chose {v} as a favourite colour ."),
    things=("red", "blue", "green", "yellow", "purple", "orange", "teal", "grey", "brown", "pink", "white",
            "black", "violet", "amber", "crimson", "silver")),
)}

FILLERS = ("by all accounts ,", "as the records say ,", "in those years", "or so it is told ,", "as everyone knew ,",
           "long before the war ,", "in the old days", "without question ,", "at least once ,", "as the letters show ,",
           "late in life ,", "in the first place ,")

PRONOUNS = ("she", "he")

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
PLACE_WORDS = (("Upper", "Lower", "North", "South", "Old", "New"), ("Ford", "Cross", "Marsh", "Bay", "Hill", "Vale"))
ORG_WORDS = (("Trading", "Shipping", "Iron", "Textile", "Grain", "River"), ("Guild", "Group", "Works", "Company",
                                                                            "Mills", "Holdings"))

# Distractor sentences: another entity beside values of the world's kinds, stating no fact
# the questions ask about. "{o}" another subject; "{person}", "{place}", ... a value of that kind.
DISTRACTORS = {
    "person": ("{o} once shared a meal with {person} .", "{person} wrote a letter to {o} ."),
    "place": ("{o} once travelled through {place} .", "a cousin of {o} visited {place} ."),
    "org": ("{o} once sold goods to {org} .", "{org} sent a parcel to {o} ."),
    "year": ("{o} wrote a book in {year} .", "in {year} {o} went abroad ."),
    "count": ("{o} owns {count} goats .", "{o} walked {count} miles ."),
    "date": ("{o} arrived on {date} .", "the fair began on {date} ."),
    "thing": ("{o} once heard a {thing} .", "{o} sold a {thing} at the fair ."),
}

_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "cr", "dr",
           "gl", "pr", "st", "tr", "sh")
_NUCLEI = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "k", "m", "x")


def invent_words(rng: random.Random, n: int, onsets: int, taken: set[str], syllables: tuple[int, int] = (2, 2)) -> list[str]:
    """``n`` distinct capitalised invented words from the first ``onsets`` onsets (a smaller
    inventory: more shared word pieces between names), none in ``taken`` (case-insensitive)."""
    seen = {t.lower() for t in taken}
    out: list[str] = []
    inventory = _ONSETS[:max(4, onsets)]
    for _ in range(200 * n + 1000):
        if len(out) == n:
            return out
        k = rng.randint(*syllables)
        word = "".join(rng.choice(inventory) + rng.choice(_NUCLEI) for _ in range(k)) + rng.choice(_CODAS)
        if len(word) >= 3 and word not in seen:
            seen.add(word)
            out.append(word.capitalize())
    raise ValueError(f"cannot invent {n} distinct words from {onsets} onsets")  # guarded by the knob ranges
