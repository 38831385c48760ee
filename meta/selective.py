"""Selective-masking importance labels (Train No Evil, Gu et al., EMNLP 2020).

On the downstream examples a fine-tuned classifier gets right, words are scanned left to
right with a buffer ``B`` (starts empty). For word ``w_i``:

    S(w_i) = P(y | sentence) - P(y | B + w_i)

If ``S(w_i) < delta`` the buffer plus ``w_i`` already explains the label about as well as the
whole sentence does, so ``w_i`` is *important* (its tokens get label 1) and is **not**
appended; otherwise ``w_i`` is appended to ``B`` (label 0). Stop words and punctuation are
never important: label 0, appended without asking the classifier.

``B`` depends on earlier decisions, so the words of one example are sequential; examples are
processed in lockstep instead (word position ``i`` of every example, batched), which makes
the number of classifier calls ``~ max words x ceil(examples / batch_size)``.

Using the labels: a ``LearnedPolicy`` is trained on them (``supervised.learn_supervised``)
and applied to the in-domain corpus through the normal policy interface. Train No Evil then
masks, per sequence, only tokens predicted important, ranked by score, up to 15% (none if
none): set ``masking.fill_zero: false`` (``MaskingConfig(fill_zero=False)``) so that the
sampler does not fill the budget with zero-probability tokens. No wrapper is provided for
thresholding the probabilities; the sampler's ranking already takes the top ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import datasets
import torch

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.tasks.base import LabeledText

# A short, hand-made list of English function words (articles, pronouns, auxiliaries,
# prepositions, conjunctions). Negations ("not", "no", "never") are left out on purpose:
# they flip sentiment, so they must be allowed to be important.
STOP_WORDS = frozenset("""
a an the this that these those there here it its it's itself i me my mine myself we us our ours
you your yours he him his she her hers they them their theirs one ones who whom whose which what
is are was were be been being am do does did doing done have has had having will would shall
should can could may might must of in on at by for with about against between into through during
before after above below to from up down out off over under again further then once and or but if
because as until while so than too very just also only own same such both each few more most other
some any all s t 's 're 've 'd 'll n't
""".split())


@dataclass
class SelectiveConfig:
    delta: float = 0.01  # S(w) < delta -> important
    stop_words: frozenset = STOP_WORDS  # lower-cased; never important
    max_examples: int | None = None  # scan only the first N examples (before filtering)
    batch_size: int = 64  # classifier batch

    def __post_init__(self) -> None:
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)) or not math.isfinite(self.delta):
            raise ConfigError(f"selective: delta must be a finite number, got {self.delta!r}")
        if isinstance(self.stop_words, str) or not all(isinstance(w, str) for w in self.stop_words):
            raise ConfigError("selective: stop_words must be a collection of strings")
        self.stop_words = frozenset(w.lower() for w in self.stop_words)
        if self.max_examples is not None and (isinstance(self.max_examples, bool)
                                              or not isinstance(self.max_examples, int) or self.max_examples < 1):
            raise ConfigError(f"selective: max_examples must be a positive int or None, got {self.max_examples!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"selective: batch_size must be a positive int, got {self.batch_size!r}")


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask), each [len(rows), longest] long."""
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()


@torch.no_grad()
def _label_probs(classifier, sequences: list[list[int]], labels: list[int], pad_id: int,
                 batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(label | sequence), prediction == label), each [len(sequences)], batched."""
    device = next(classifier.parameters(), torch.empty(0)).device  # a rule with no weights runs on CPU
    probs, right = [], []
    for s in range(0, len(sequences), batch_size):
        ids, attn = _pad(sequences[s: s + batch_size], pad_id)  # [b, T] each
        logits = classifier(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float().cpu()  # [b, C]
        y = torch.tensor(labels[s: s + batch_size])
        probs.append(logits.softmax(-1).gather(1, y[:, None]).squeeze(1))
        right.append(logits.argmax(-1) == y)
    if not probs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    return torch.cat(probs), torch.cat(right)


def _is_filler(word: str, stop_words: frozenset) -> bool:
    """Stop word or pure punctuation: never important."""
    return word.lower() in stop_words or not any(c.isalnum() for c in word)


def importance_labels(classifier, tokenizer, examples: list[LabeledText], config: SelectiveConfig | None = None,
                      max_length: int = 64) -> datasets.Dataset:
    """Token labels from the buffer rule (module doc) on the examples the classifier gets right.

    ``classifier``: any module called as ``classifier(input_ids=, attention_mask=)`` whose
    output has ``.logits`` [B, num_labels] (a HF sequence classifier). Columns:
    ``input_ids``, ``word_ids`` (-1 at special tokens), ``token_labels`` (1 important, 0 not,
    -100 special), ``label`` (the example's class). Words are the tokenizer's words
    (``word_ids``); a buffer is fed to the classifier as token ids between the same special
    tokens as the full sentence, so nothing is re-tokenised.
    """
    config = config or SelectiveConfig()
    if not examples:
        raise DataError("selective masking needs labelled examples; got none")
    examples = examples[: config.max_examples] if config.max_examples else list(examples)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    texts = [ex.text for ex in examples]
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    was_training = classifier.training
    classifier.eval()
    try:
        y = [int(ex.label) for ex in examples]
        # [E] P(y | s) and whether the classifier's prediction is y (only those examples count).
        full, correct = _label_probs(classifier, enc["input_ids"], y, pad_id, config.batch_size)
        kept = [e for e in range(len(examples)) if bool(correct[e])]
        if not kept:
            raise DataError(f"the classifier gets none of the {len(examples)} examples right: "
                            "no importance labels (fine-tune it longer?)")
        rows = {e: _Row(enc, e, texts[e]) for e in kept}
        longest = max(len(r.words) for r in rows.values())
        for i in range(longest):  # word position i of every example at once
            asks = []  # (example, token positions, token ids) of words the classifier must judge
            for e, r in rows.items():
                if i >= len(r.words):
                    continue
                positions, word = r.words[i]
                tokens = [r.ids[p] for p in positions]
                if _is_filler(word, config.stop_words):
                    r.buffer.extend(tokens)
                else:
                    asks.append((e, positions, tokens))
            if not asks:
                continue
            seqs = [rows[e].head + rows[e].buffer + t + rows[e].tail for e, _, t in asks]
            probs, _ = _label_probs(classifier, seqs, [y[e] for e, _, _ in asks], pad_id, config.batch_size)
            for (e, positions, tokens), p in zip(asks, probs.tolist()):
                if float(full[e]) - p < config.delta:
                    for pos in positions:
                        rows[e].labels[pos] = 1
                else:
                    rows[e].buffer.extend(tokens)
    finally:
        classifier.train(was_training)
    return datasets.Dataset.from_dict({
        "input_ids": [rows[e].ids for e in kept],
        "word_ids": [rows[e].word_ids for e in kept],
        "token_labels": [rows[e].labels for e in kept],
        "label": [y[e] for e in kept],
    })


class _Row:
    """One example's scan state: its tokens, words, buffer and labels."""

    def __init__(self, enc, e: int, text: str) -> None:
        self.ids: list[int] = list(enc["input_ids"][e])
        words = enc.word_ids(e)  # [T] word index or None at special tokens
        self.word_ids = [-1 if w is None else int(w) for w in words]
        self.labels = [-100 if w is None else 0 for w in words]
        real = [j for j, w in enumerate(words) if w is not None]
        # Special tokens before the first / after the last word ([CLS] ... [SEP]) frame every buffer.
        self.head = self.ids[: real[0]] if real else list(self.ids)
        self.tail = self.ids[real[-1] + 1:] if real else []
        offsets = enc["offset_mapping"][e]
        self.words: list[tuple[list[int], str]] = []  # (token positions, surface text) in order
        for j in real:
            if self.words and words[self.words[-1][0][-1]] == words[j]:
                self.words[-1][0].append(j)
            else:
                self.words.append(([j], ""))
        self.words = [(pos, text[offsets[pos[0]][0]: offsets[pos[-1]][1]]) for pos, _ in self.words]
        self.buffer: list[int] = []


@dataclass
class ClassifierConfig:
    """The classifier that judges importance when none is given: a masked LM (size preset,
    trained from scratch, or a checkpoint directory) with a fresh classification head,
    fine-tuned on the task's training examples."""

    model: str = "tiny"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 5e-4
    seed: int = 0
    max_train_examples: int | None = None  # the first N training examples only (a pretrained model's time)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size") + (("max_train_examples",) if self.max_train_examples is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"classifier: {name} must be a positive int, got {value!r}")
        if not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate < 1:
            raise ConfigError(f"classifier: learning_rate must be in (0, 1), got {self.learning_rate!r}")


def fit_classifier(tokenizer, examples: list[LabeledText], num_labels: int, config: ClassifierConfig | None = None,
                   max_length: int = 64, progress: bool = False):
    """A sequence classifier fine-tuned on ``examples`` (returned in eval mode, on CPU)."""
    from tqdm.auto import tqdm

    from maskpolicy.train.finetune import classifier_from_lm
    from maskpolicy.train.models import is_preset, load_masked_lm, preset_model

    config = config or ClassifierConfig()
    if not examples:
        raise DataError("cannot fine-tune a classifier without labelled examples")
    examples = examples[: config.max_train_examples] if config.max_train_examples else examples
    torch.manual_seed(config.seed)
    lm = (preset_model(config.model, vocab_size=len(tokenizer), max_length=max_length,
                       pad_token_id=tokenizer.pad_token_id or 0)
          if is_preset(config.model) else load_masked_lm(config.model))
    clf = classifier_from_lm(lm, num_labels)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = tokenizer([ex.text for ex in examples], truncation=True, max_length=max_length)["input_ids"]
    y = torch.tensor([int(ex.label) for ex in examples])
    optimizer = torch.optim.AdamW(clf.parameters(), lr=config.learning_rate, weight_decay=0.01)
    gen = torch.Generator().manual_seed(config.seed)
    clf.train()
    bar = tqdm(range(config.epochs), desc="classifier", disable=not progress, leave=False)
    for _ in bar:
        for idx in torch.randperm(len(ids), generator=gen).split(config.batch_size):
            batch, attn = _pad([ids[i] for i in idx.tolist()], pad_id)  # [b, T] each
            loss = clf(input_ids=batch, attention_mask=attn, labels=y[idx]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return clf.eval()
