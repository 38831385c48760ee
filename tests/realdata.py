"""A miniature copy of the ../shared/data layout, generated (tests of loaders and of the real suite)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

CONTEXT = ("The lobster lives in the Atlantic Ocean. It was described by Dr. Smith in 1758. "
           "Lobsters are blue until cooked.")


def _qa(qid: str, *answers: str, impossible: bool = False, context: str = CONTEXT) -> dict:
    return {"id": qid, "question": f"question {qid}?", "is_impossible": impossible,
            "answers": [{"text": a, "answer_start": context.index(a)} for a in answers]}


SQUAD = {"version": "v2.0", "data": [{"title": "Lobsters", "paragraphs": [{"context": CONTEXT, "qas": [
    _qa("q1", "Atlantic Ocean", "the Atlantic Ocean", "Atlantic", "Atlantic Ocean"),
    _qa("q2", "Dr. Smith"),
    _qa("q3", "Atlantic Ocean"),  # the same cloze as q1: deduplicated
    _qa("q4", "blue"),
    _qa("q5", impossible=True),  # unanswerable: skipped
]}]}]}

ANIMALS = ["lobster", "crab", "heron", "otter", "walrus", "puffin", "seal", "gannet", "eel", "squid", "tern", "pike"]
PLACES = ["Atlantic Ocean", "Baltic Sea", "North Cape", "Irish Sea", "Biscay Bay", "Dover Strait"]


def larger_squad() -> dict:
    """Twelve paragraphs with three answerable questions each (enough for seeded splits)."""
    paragraphs = []
    for i, animal in enumerate(ANIMALS):
        place, year = PLACES[i % len(PLACES)], str(1700 + 7 * i)
        context = f"The {animal} lives in the {place}. It was first described in {year}. Fishermen call it Old {animal.title()}."
        paragraphs.append({"context": context, "qas": [_qa(f"{animal}1", place, context=context),
                                                       _qa(f"{animal}2", year, context=context),
                                                       _qa(f"{animal}3", f"Old {animal.title()}", context=context)]})
    return {"version": "v2.0", "data": [{"title": "Sea life", "paragraphs": paragraphs}]}


def _write(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))


def write_mini_data(root: Path, squad: dict = SQUAD) -> Path:
    _write(root / "mr/rt-polarity.pos", "".join(f"a charming café film number {i} .\n" for i in range(20)), "latin-1")
    _write(root / "mr/rt-polarity.neg", "".join(f"a dull film number {i} .\n" for i in range(20)), "latin-1")
    _write(root / "sst2/stsa.binary.train", "1 a stirring , funny film\n0 a dull mess\n\n1 great fun\n")
    _write(root / "sst2/stsa.binary.dev", "0 boring\n1 lovely\n")
    rows = [["label", "text", "is_valid"]]
    long_review = " ".join(f"Sentence {i} says the film was fine, really." for i in range(30))
    rows += [["negative", "Awful.<br /><br />Just awful, I say.", "False"], ["positive", long_review, "False"],
             ["positive", "Loved it. Would watch again.", "True"]]
    (root / "imdb").mkdir(parents=True)
    with open(root / "imdb/texts.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    for part in ("dev", "test"):
        for label in (0, 1):
            lines = "".join(f"{part} {label} food line {i} .\n" for i in range(10))
            _write(root / f"yelp/sentiment.{part}.{label}", lines)
    _write(root / "wikitext2/valid.txt", " \n = Lobster = \n \n The lobster is blue . It lives in the sea .\n"
                                         " \n = = Diet = = \n The lobster eats fish .\n")
    _write(root / "wikitext2/test.txt", " \n = Crab = \n The crab walks sideways .\n")
    _write(root / "squad_subset/dev-subset-v2.0.json", json.dumps(squad))
    return root
