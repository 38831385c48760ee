"""Tokenizers: a BERT-style WordPiece tokenizer trained on a task's texts, or a vocab file.

No pre-trained tokenizer is reachable offline, so by default each run trains a WordPiece
vocabulary on its task's texts and saves it with the model; ``load_vocab_tokenizer`` reads
an existing WordPiece vocabulary (e.g. BERT's ``vocab.txt``).

Why not ``tokenizers.trainers.WordPieceTrainer``: it is not deterministic across processes
(the ids of its "##" pieces follow hash-map order and break ties between equally frequent
merges, huggingface/tokenizers#1794), so two runs on the same texts could tokenise them
differently. The vocabulary is learnt here instead, with the same BPE-style procedure
(repeatedly merge the most frequent adjacent pair) and a fixed tie-break, and handed to
the ``tokenizers`` WordPiece model; normaliser, pre-tokeniser, post-processor and decoder
are the ``tokenizers`` BERT components.
"""
from __future__ import annotations

import heapq
import inspect
import os
from collections import Counter, defaultdict

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.policies.paths import read_text

from .base import Task

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] = id 0
PREFIX = "##"  # marks a piece that continues a word


def _merge(symbols: list[str], a: str, b: str, new: str) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def learn_wordpiece_vocab(word_counts: dict[str, int], vocab_size: int, min_frequency: int = 1) -> list[str]:
    """Vocabulary (special tokens, alphabet, then merged pieces in merge order).

    Every character gets a word-initial and a "##" form, so any word made of seen
    characters is tokenisable. Merges pick the most frequent adjacent pair; ties go to the
    lexicographically smallest pair, which makes the result independent of dict order.
    """
    chars = Counter()
    for word, n in word_counts.items():
        for c in word:
            chars[c] += n
    room = max(0, (vocab_size - len(SPECIAL_TOKENS)) // 2)  # both forms of a character
    alphabet = sorted(c for c, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))[:room])
    vocab = SPECIAL_TOKENS + alphabet + [PREFIX + c for c in alphabet]
    known = set(vocab)
    kept = set(alphabet)
    words = [([w[0]] + [PREFIX + c for c in w[1:]], n) for w, n in sorted(word_counts.items())
             if all(c in kept for c in w)]
    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> indices of words holding it
    for i, (symbols, n) in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += n
            where[pair].add(i)
    heap = [(-n, a, b) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b), 0) != -neg:
            continue  # stale heap entry: the count changed since it was pushed
        if -neg < min_frequency:
            break
        new = a + b[len(PREFIX):]
        if new not in known:
            vocab.append(new)
            known.add(new)
        delta: dict[tuple[str, str], int] = defaultdict(int)
        for i in sorted(where.pop((a, b), ())):
            symbols, n = words[i]
            merged = _merge(symbols, a, b, new)
            for pair in zip(symbols, symbols[1:]):
                delta[pair] -= n
            for pair in zip(merged, merged[1:]):
                delta[pair] += n
                where[pair].add(i)
            words[i] = (merged, n)
        for pair, d in delta.items():
            if d:
                pair_counts[pair] += d
                if pair_counts[pair] > 0:
                    heapq.heappush(heap, (-pair_counts[pair], *pair))
                else:
                    del pair_counts[pair]
    return vocab


def _bert_pipeline(tok: Tokenizer, lowercase: bool) -> Tokenizer:
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece(prefix=PREFIX)
    return tok


def build_tokenizer(texts: list[str], vocab_size: int = 8000, lowercase: bool = False,
                    min_frequency: int = 1, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer over ``texts`` (deterministic for the same texts).

    ``[CLS] text [SEP]`` (pairs: ``[CLS] a [SEP] b [SEP]``); ids 0-4 are [PAD] [UNK] [CLS]
    [SEP] [MASK]. Saves with ``save_pretrained`` and loads with ``AutoTokenizer``.
    """
    if not texts:
        raise DataError("cannot build a tokenizer from an empty list of texts")
    if vocab_size < 100:
        raise ConfigError(f"vocab_size must be at least 100, got {vocab_size}")
    if min_frequency < 1:
        raise ConfigError(f"min_frequency must be >= 1, got {min_frequency}")
    splitter = _bert_pipeline(Tokenizer(models.WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS)},
                                                         unk_token="[UNK]")), lowercase)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in splitter.pre_tokenizer.pre_tokenize_str(splitter.normalizer.normalize_str(text)))
    if not counts:
        raise DataError("cannot build a tokenizer: the texts hold no words")
    vocab = learn_wordpiece_vocab(counts, vocab_size, min_frequency)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     continuing_subword_prefix=PREFIX, max_input_chars_per_word=100))
    tok.add_special_tokens(SPECIAL_TOKENS)  # matched as wholes in raw text, e.g. "[MASK]"
    _bert_pipeline(tok, lowercase)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length)


def load_vocab_tokenizer(vocab_file: str, lowercase: bool = True) -> BertTokenizerFast:
    """A ``BertTokenizerFast`` from a WordPiece vocab file (one token per line)."""
    if not os.path.isfile(vocab_file):
        raise DataError(f"vocabulary file not found: {vocab_file} (expected a WordPiece vocab.txt)")
    tokens = read_text(vocab_file).split("\n")
    vocab = {t: i for i, t in enumerate(tokens) if t}
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise DataError(f"{vocab_file}: not a BERT WordPiece vocabulary (no {', '.join(missing)})")
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        return BertTokenizerFast(vocab=vocab, do_lower_case=lowercase)
    return BertTokenizerFast(vocab_file=vocab_file, do_lower_case=lowercase)


def tokenizer_for_task(task: Task, vocab_size: int = 8000) -> PreTrainedTokenizerFast:
    """A cased WordPiece tokenizer over every text of the task (corpus, questions, answers).

    In the synthetic world every word (names, values) fits in the default vocabulary, so
    each answer is one token.
    """
    return build_tokenizer(task.texts_for_tokenizer(), vocab_size=vocab_size, lowercase=False)


SENTINEL_COUNT = 100  # as T5: more than the spans of any sequence at a 15% budget and 512 tokens


def with_sentinels(tokenizer, count: int = SENTINEL_COUNT):
    """The tokenizer with sentinel tokens ``<extra_id_0>`` ... ``<extra_id_{count-1}>`` (T5's
    names) added as special tokens after the existing ids, which keep their meaning: what
    seq2seq span corruption with sentinels needs (``policies.seq2seq_collator``). Changes
    ``tokenizer`` in place and returns it; sentinels it already has are not added twice. A
    model's embeddings must then cover ``len(tokenizer)`` ids."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"the number of sentinel tokens must be a positive integer, got {count!r}")
    wanted = [f"<extra_id_{i}>" for i in range(count)]
    vocab = tokenizer.get_vocab()
    missing = [t for t in wanted if t not in vocab]
    if missing:
        present = [str(t) for t in getattr(tokenizer, "additional_special_tokens", None) or []]
        tokenizer.add_special_tokens({"additional_special_tokens": present + missing})  # keeps the present ones
    return tokenizer
