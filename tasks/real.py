"""Real data sets read from a local directory (never downloaded, never copied into the repo).

The directory is ``data_dir`` or else ``$MASKPOLICY_DATA_DIR``; it holds the layout of
``../shared/data`` (see its SOURCES.md):

===========  ==============  =========================================================
name         kind            files (relative to the data directory)
===========  ==============  =========================================================
mr           classification  mr/rt-polarity.pos, mr/rt-polarity.neg (Latin-1); seeded
                             90/10 train/eval; corpus = IMDB passages + Yelp sentences
sst2         classification  sst2/stsa.binary.train (train), sst2/stsa.binary.dev (eval),
                             "label sentence" per line; corpus as for mr
imdb         corpus          imdb/texts.csv (label,text,is_valid): reviews cut into
                             passages of <= max_words words; is_valid rows -> eval_corpus
yelp         corpus          yelp/sentiment.{dev,test}.{0,1}; seeded 5% eval_corpus
wikitext2    corpus          wikitext2/valid.txt -> corpus, wikitext2/test.txt -> eval
squad        cloze           squad_subset/dev-subset-v2.0.json: closed-book answer cloze
===========  ==============  =========================================================

Every split is deterministic for a ``seed``. Missing files raise ``DataError`` naming each
missing path; empty or malformed files raise ``DataError`` naming the file and line.
"""
from __future__ import annotations

import csv
import json
import os
import random
import sys
from collections.abc import Callable

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.policies.paths import read_text, utf8_errors

from .base import ClozeQuestion, LabeledText, Passage, Span, Task
from .text import chunk_passages, cloze_from_context, sentence_bounds

DATA_DIR_ENV = "MASKPOLICY_DATA_DIR"
SENTIMENT_LABELS = ["negative", "positive"]
_IMDB = "imdb/texts.csv"
_YELP = [f"yelp/sentiment.{part}.{label}" for part in ("dev", "test") for label in (0, 1)]
_SQUAD = "squad_subset/dev-subset-v2.0.json"


def resolve_data_dir(data_dir: str | None) -> str:
    """``data_dir``, else ``$MASKPOLICY_DATA_DIR``; DataError when neither is set or it is absent."""
    path = data_dir or os.environ.get(DATA_DIR_ENV)
    if not path:
        raise DataError(f"real tasks read local data: pass --data-dir DIR (data_dir=...) or set {DATA_DIR_ENV}")
    if not os.path.isdir(path):
        raise DataError(f"data directory not found: {path} (expected a folder laid out like shared/data)")
    return path


def _require(root: str, rel_paths: list[str], what: str) -> list[str]:
    """Absolute paths of ``rel_paths``; one DataError listing every missing one."""
    paths = [os.path.join(root, p) for p in rel_paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"missing data file(s) {', '.join(missing)}: expected {what}")
    return paths


def _read_lines(path: str, encoding: str = "utf-8") -> list[tuple[int, str]]:
    """``(line_number, stripped_line)`` of the non-empty lines; DataError when there are none."""
    with utf8_errors(path), open(path, encoding=encoding) as fh:  # latin-1 decodes any byte
        rows = [(i, line.strip()) for i, line in enumerate(fh, 1)]
    rows = [(i, line) for i, line in rows if line]
    if not rows:
        raise DataError(f"{path}: file is empty")
    return rows


def _seeded_split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(rest, held_out): a seeded ``fraction`` (at least one item) held out; order preserved."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_out = max(1, round(fraction * len(items))) if len(items) > 1 else 0
    held = set(order[:n_out])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


# ----------------------------------------------------------------------------- corpora
def _imdb_passages(root: str, max_words: int) -> tuple[list[Passage], list[Passage]]:
    (path,) = _require(root, [_IMDB], "the IMDB sample as a csv with columns label,text,is_valid")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    corpus, held = [], []
    with utf8_errors(path), open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"text", "is_valid"} <= set(reader.fieldnames):
            raise DataError(f"{path}: line 1: expected a header with columns label,text,is_valid, "
                            f"got {reader.fieldnames}")
        for row_no, row in enumerate(reader, 1):
            text = row.get("text")
            if text is None or row.get("is_valid") is None:
                raise DataError(f"{path}: line {reader.line_num}: row has too few columns")
            text = text.replace("<br />", " ").replace("<br/>", " ").replace("<br>", " ")
            target = held if row["is_valid"].strip().lower() in ("true", "1", "yes") else corpus
            target.extend(Passage(p, key=f"imdb/{row_no}") for p in chunk_passages(text, max_words))
    if not corpus and not held:
        raise DataError(f"{path}: no reviews")
    return corpus, held


def _yelp_sentences(root: str) -> list[Passage]:
    out = []
    for path in _require(root, _YELP, "Yelp review sentences, one per line"):
        out.extend(Passage(line) for _, line in _read_lines(path))
    return out


def _in_domain_corpus(root: str, seed: int, max_words: int, cap: int | None) -> list[Passage]:
    """Unlabelled movie/restaurant review text for the sentiment tasks (IMDB + Yelp)."""
    imdb, imdb_held = _imdb_passages(root, max_words)
    passages = imdb + imdb_held + _yelp_sentences(root)
    if cap is not None and len(passages) > cap:
        passages = random.Random(seed).sample(passages, cap)
    return passages


# ----------------------------------------------------------------------------- tasks
def _load_mr(root: str, seed: int, max_words: int, cap: int | None) -> Task:
    pos, neg = _require(root, ["mr/rt-polarity.pos", "mr/rt-polarity.neg"],
                        "Movie Review polarity sentences, one per line, Latin-1")
    examples = [LabeledText(t, 0) for _, t in _read_lines(neg, "latin-1")]
    examples += [LabeledText(t, 1) for _, t in _read_lines(pos, "latin-1")]
    random.Random(seed).shuffle(examples)
    train, evaluation = _seeded_split(examples, 0.1, seed)
    corpus = _in_domain_corpus(root, seed, max_words, cap)
    return Task("mr", "classification", corpus, train, evaluation, list(SENTIMENT_LABELS),
                description=f"Movie Review polarity: {len(train)} train / {len(evaluation)} eval sentences "
                            f"(seeded 90/10); corpus {len(corpus)} IMDB+Yelp passages")


def _sst2_file(path: str) -> list[LabeledText]:
    out = []
    for line_no, line in _read_lines(path):
        label, _, text = line.partition(" ")
        if label not in ("0", "1") or not text.strip():
            raise DataError(f"{path}: line {line_no}: expected '0 sentence' or '1 sentence', got {line[:60]!r}")
        out.append(LabeledText(text.strip(), int(label)))
    return out


def _load_sst2(root: str, seed: int, max_words: int, cap: int | None) -> Task:
    train_path, dev_path = _require(root, ["sst2/stsa.binary.train", "sst2/stsa.binary.dev"],
                                    "SST-2 files with 'label sentence' per line")
    train, evaluation = _sst2_file(train_path), _sst2_file(dev_path)
    corpus = _in_domain_corpus(root, seed, max_words, cap)
    return Task("sst2", "classification", corpus, train, evaluation, list(SENTIMENT_LABELS),
                description=f"SST-2: {len(train)} train / {len(evaluation)} dev sentences; "
                            f"corpus {len(corpus)} IMDB+Yelp passages")


def _load_imdb(root: str, seed: int, max_words: int, cap: int | None) -> Task:
    corpus, held = _imdb_passages(root, max_words)
    if not held:
        corpus, held = _seeded_split(corpus, 0.05, seed)
    return Task("imdb", "corpus", corpus, eval_corpus=held,
                description=f"IMDB reviews: {len(corpus)} passages, {len(held)} held out (<= {max_words} words)")


def _load_yelp(root: str, seed: int, max_words: int, cap: int | None) -> Task:
    corpus, held = _seeded_split(_yelp_sentences(root), 0.05, seed)
    return Task("yelp", "corpus", corpus, eval_corpus=held,
                description=f"Yelp review sentences: {len(corpus)} passages, {len(held)} held out (seeded 5%)")


def _wiki_passages(path: str, max_words: int) -> list[Passage]:
    out = []
    for _, line in _read_lines(path):
        if line.startswith("=") and line.endswith("="):  # " = Heading = ", " = = Sub = = "
            continue
        out.extend(Passage(p) for p in chunk_passages(line, max_words))
    return out


def _load_wikitext2(root: str, seed: int, max_words: int, cap: int | None) -> Task:
    valid, test = _require(root, ["wikitext2/valid.txt", "wikitext2/test.txt"], "WikiText-2 (tokenized) text")
    corpus, held = _wiki_passages(valid, max_words), _wiki_passages(test, max_words)
    return Task("wikitext2", "corpus", corpus, eval_corpus=held,
                description=f"WikiText-2: {len(corpus)} valid passages (corpus), {len(held)} test passages (eval)")


def _load_squad(root: str, seed: int, max_words: int, cap: int | None) -> Task:
    (path,) = _require(root, [_SQUAD], "a SQuAD 2.0 json file")
    text = read_text(path)
    try:
        articles = json.loads(text)["data"]
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from None
    except (KeyError, TypeError):
        raise DataError(f"{path}: expected a SQuAD object with a 'data' list") from None
    return squad_task(articles, seed, source=path)


def squad_task(articles: list[dict], seed: int = 0, source: str = "squad") -> Task:
    """Closed-book answer cloze from SQuAD-format ``articles`` (the json's ``data`` list).

    Corpus: one passage per context sentence (key ``title/paragraph_index``). Questions:
    the sentence holding each answerable question's first answer, answer -> BLANK; split
    50/50 by question with the seed; gold spans mark the answer in its corpus sentence.
    """
    corpus: list[Passage] = []
    items: list[tuple[ClozeQuestion, Passage, int, int]] = []  # question, its passage, span start/end
    seen: set[tuple[str, str]] = set()
    try:
        for article in articles:
            for p_idx, para in enumerate(article["paragraphs"]):
                key = f"{article.get('title', '')}/{p_idx}"
                context = para["context"]
                answerable = [qa for qa in para.get("qas", []) if qa.get("answers") and not qa.get("is_impossible")]
                protect = [(a["answer_start"], a["answer_start"] + len(a["text"]))
                           for qa in answerable for a in qa["answers"]]
                bounds = sentence_bounds(context, protect)
                passages = {b: Passage(context[b[0]:b[1]], key=key) for b in bounds}
                corpus.extend(passages.values())
                for qa in answerable:
                    first = qa["answers"][0]
                    others = [(a["answer_start"], a["text"]) for a in qa["answers"][1:]]
                    try:
                        cloze = cloze_from_context(context, first["answer_start"], first["text"], others, bounds)
                    except ValueError:
                        continue  # offset does not match the text: skip this question
                    passage = passages.get((cloze.sentence_start, cloze.sentence_start + len(cloze.sentence)))
                    if passage is None or (cloze.text, cloze.answers[0]) in seen:
                        continue  # answer not inside one corpus sentence (e.g. trailing space), or a repeat
                    seen.add((cloze.text, cloze.answers[0]))
                    items.append((ClozeQuestion(cloze.text, cloze.answers, key=key), passage, cloze.start, cloze.end))
    except (KeyError, TypeError) as err:
        raise DataError(f"{source}: not SQuAD format (missing or bad field {err})") from None
    if not items:
        raise DataError(f"{source}: no answerable questions")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    eval_ids = set(order[: len(items) // 2])
    train, evaluation = [], []
    for i, (question, passage, start, end) in enumerate(items):
        split = "eval" if i in eval_ids else "train"
        (evaluation if split == "eval" else train).append(question)
        passage.spans.append(Span(start, end, split))
    return Task("squad", "cloze", corpus, train, evaluation,
                description=f"SQuAD 2.0 subset as closed-book answer cloze: {len(corpus)} corpus sentences, "
                            f"{len(train)} train / {len(evaluation)} eval questions")


_LOADERS: dict[str, Callable[[str, int, int, int | None], Task]] = {
    "mr": _load_mr, "sst2": _load_sst2, "imdb": _load_imdb, "yelp": _load_yelp,
    "wikitext2": _load_wikitext2, "squad": _load_squad,
}
REAL_TASKS = tuple(_LOADERS)


def load_real_task(name: str, data_dir: str | None = None, seed: int = 0, max_words: int = 60,
                   max_corpus_passages: int | None = None) -> Task:
    """Load a built-in real task (``REAL_TASKS``) from ``data_dir`` / ``$MASKPOLICY_DATA_DIR``.

    ``max_words`` caps passage length (words) for documents cut into passages;
    ``max_corpus_passages`` caps the IMDB+Yelp corpus of mr/sst2 (a seeded sample).
    """
    if name not in _LOADERS:
        raise ConfigError(f"unknown real task {name!r}; known: {', '.join(REAL_TASKS)}")
    if max_words < 1:
        raise ConfigError(f"max_words must be >= 1, got {max_words}")
    if max_corpus_passages is not None and max_corpus_passages < 1:
        raise ConfigError(f"max_corpus_passages must be >= 1 or None, got {max_corpus_passages}")
    return _LOADERS[name](resolve_data_dir(data_dir), seed, max_words, max_corpus_passages)
