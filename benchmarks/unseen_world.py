"""A world the library has never seen, written as a custom task from files.

The built-in synthetic world (``tasks/synthetic.py``) is where policies were developed; a
learned policy that only works there would prove little. This script writes a *different*
world as an ordinary task directory (``task.yaml`` + JSONL), exactly as a user would
provide one, and nothing in the library knows its templates or vocabulary:

- ships (invented names from another syllable inventory) with two facts each: a home
  port and a captain; both values are **two words** ("Port Halvard", "Ilsa Morn"), so
  answers are several tokens and the capitalised-run heuristic cannot tell them apart;
- other templates, other fillers; the questions ask only for the home port, so the
  captain sentences are a distractor half of the corpus that a good policy must not
  spend its budget on.

    python -m maskpolicy.benchmarks.unseen_world --out runs/harbour            # 200 ships
    maskpolicy learn --task runs/harbour --method meta --out runs/harbour-pol
    maskpolicy pretrain --task runs/harbour --policy runs/harbour-pol --out runs/harbour-pt
"""
from __future__ import annotations

import argparse
import json
import os
import random

from maskpolicy.policies.errors import ConfigError
from maskpolicy.train.checkpoint import write_text_atomic

PORT_TEMPLATES = [
    "the ship {e} sails from {v} .",
    "{e} is moored at {v} every winter .",
    "the harbour master of {v} keeps the papers of {e} .",
    "{v} is the home port of {e} .",
    "sailors say the {e} always returns to {v} .",
]
CAPTAIN_TEMPLATES = [
    "the ship {e} is commanded by {v} .",
    "{v} has been the captain of {e} for years .",
    "under {v} the {e} never lost a sailor .",
    "the crew of {e} trusts {v} .",
    "{e} takes orders from {v} .",
]
PORTS = ["Port Halvard", "Saint Orrin", "Kessel Bay", "Marrow Reach", "Grey Anchor", "Lantern Point",
         "Cape Ushel", "North Tamsin", "Brightwater Quay", "Fenwick Harbour", "Dorn Isle", "Salt Hollow",
         "Red Cliff", "Upper Vessa", "Coral Gate", "West Mark"]
FIRST = ["Ilsa", "Toma", "Bren", "Oskar", "Maelis", "Jory", "Anouk", "Calder", "Rhona", "Piet", "Sena", "Hakon"]
LAST = ["Morn", "Vasker", "Tull", "Edrin", "Quell", "Barrow", "Linde", "Sorrel", "Haskin", "Wick"]
# Every sentence gets a filler of at least three words: a sentence of n tokens masks
# round(0.15 n) of them, and a two-token answer only fits that budget from n = 10 on (the
# sampler keeps spans whole and skips a span larger than the budget; see the README).
FILLERS = ["in the old logbook ,", "by all accounts ,", "as the tide tables note ,", "late last season",
           "or so the sailors say ,", "in every port it is known that"]

_PARTS = (["al", "bo", "ce", "du", "el", "fa", "gi", "ho", "ix", "ju", "ka", "lo", "mu", "ne", "or", "pa"],
          ["rith", "vane", "mora", "stel", "quin", "dara", "lune", "bex", "tor", "wyn"])


def _ship_names(rng: random.Random, n: int) -> list[str]:
    taken = {w.lower() for v in PORTS + FIRST + LAST for w in v.split()}
    names: list[str] = []
    while len(names) < n:
        name = (rng.choice(_PARTS[0]) + rng.choice(_PARTS[0]) + rng.choice(_PARTS[1])).capitalize()
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names


def _sentence(rng: random.Random, template: str, ship: str, value: str) -> str:
    text = template.replace("{e}", ship).replace("{v}", value)
    return f"{rng.choice(FILLERS)} {text}"


def write_unseen_world(out: str, num_ships: int = 200, seed: int = 0, sentences_per_fact: int = 3) -> str:
    """Write the task directory ``out`` (task.yaml, corpus.jsonl, train.jsonl, eval.jsonl); returns it."""
    if not isinstance(num_ships, int) or not 4 <= num_ships <= 5000:
        raise ConfigError(f"num_ships must be an int in [4, 5000], got {num_ships!r}")
    if not 1 <= sentences_per_fact <= len(PORT_TEMPLATES):
        raise ConfigError(f"sentences_per_fact must be in [1, {len(PORT_TEMPLATES)}]")
    rng = random.Random(seed)
    ships = _ship_names(rng, num_ships)
    port = {s: rng.choice(PORTS) for s in ships}
    captain = {s: f"{rng.choice(FIRST)} {rng.choice(LAST)}" for s in ships}
    corpus = []
    for ship in ships:
        for templates, value in ((PORT_TEMPLATES, port[ship]), (CAPTAIN_TEMPLATES, captain[ship])):
            for template in rng.sample(templates, sentences_per_fact):
                corpus.append({"text": _sentence(rng, template, ship, value), "key": ship})
    rng.shuffle(corpus)
    held_out = set(rng.sample(ships, num_ships // 2))  # questions about these ships are the evaluation
    # Questions read like the corpus (a filler, then the first template): a question without
    # the filler puts every word at positions the tiny model never saw it at, and then even
    # the gold-span oracle answers nothing (cloze EM 0.00 after 4,000 steps; 0.02 on train
    # ships, while the same model completes the filler-prefixed sentence correctly).
    question = PORT_TEMPLATES[0].replace("{v}", "[BLANK]")
    rows = {split: [{"question": _sentence(rng, question, s, "[BLANK]"), "answers": [port[s]], "key": s}
                    for s in ships if (s in held_out) == (split == "eval")] for split in ("train", "eval")}
    os.makedirs(out, exist_ok=True)
    for name, items in (("corpus.jsonl", corpus), ("train.jsonl", rows["train"]), ("eval.jsonl", rows["eval"])):
        write_text_atomic(os.path.join(out, name), "".join(json.dumps(item) + "\n" for item in items))
    write_text_atomic(os.path.join(out, "task.yaml"), (
        "name: harbour\ntype: cloze\ncorpus: corpus.jsonl\ntrain: train.jsonl\neval: eval.jsonl\n"
        f"description: \"unseen world, seed {seed}, {num_ships} ships: home ports and captains (multi-word); "
        "questions ask for home ports only\"\n"))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="task directory to write")
    parser.add_argument("--ships", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"wrote task {write_unseen_world(args.out, args.ships, args.seed)}")


if __name__ == "__main__":
    main()
