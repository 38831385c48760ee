"""Closed-book QA by generation with a seq2seq model: fine-tune on the training questions,
generate answers for the evaluation questions, score them as SQuAD does.

A question is its cloze text with the blank shown as the tokenizer's mask token (for BART,
the infilling it was pre-trained on; with sentinels, the first sentinel); the target is the
first answer. Generation is greedy and beam search (``num_beams``); an answer counts for
exact match when its normalised form equals any gold answer's (lower case, punctuation and
the articles a / an / the removed, white space collapsed: the SQuAD v1.1 rule), and token
F1 is the best over the gold answers.
"""
from __future__ import annotations

import copy
import re
import string
from collections import Counter

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from maskpolicy.policies.errors import ConfigError, DataError
from maskpolicy.policies.seq2seq_collator import sentinel_ids
from maskpolicy.tasks.base import BLANK, ClozeQuestion

from .config import QAConfig

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        if not p or not g:
            return float(p == g)
        common = sum((Counter(p) & Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max((f1(prediction, a) for a in answers), default=0.0)


def question_text(question: ClozeQuestion, tokenizer) -> str:
    sentinels = sentinel_ids(tokenizer)
    marker = tokenizer.convert_ids_to_tokens(sentinels[0]) if sentinels else tokenizer.mask_token
    if marker is None:
        raise ConfigError("the tokenizer has neither a mask nor a sentinel token to show the question's blank")
    return question.text.replace(BLANK, marker)


def encode_qa(tokenizer, questions: list[ClozeQuestion], max_length: int) -> list[dict]:
    """``{"input_ids": question, "labels": answer}`` rows (unpadded): what QA fine-tuning and
    the seq2seq meta-step's outer loss train on."""
    sources = tokenizer([question_text(q, tokenizer) for q in questions], truncation=True, max_length=max_length)
    targets = tokenizer([q.answers[0] for q in questions], truncation=True, max_length=max_length)
    return [{"input_ids": s, "labels": t} for s, t in zip(sources["input_ids"], targets["input_ids"])]


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def finetune_qa(model, tokenizer, questions: list[ClozeQuestion], config: QAConfig, *, max_length: int = 64,
                seed: int = 0, progress: bool = False) -> tuple[torch.nn.Module, dict]:
    """A copy of ``model`` fine-tuned on question -> answer pairs (in eval mode), and how its
    epoch was chosen: ``config.dev_fraction`` of the questions are held out, and the weights
    of the epoch with the best held-out greedy exact match are kept (ties: the lower answer
    loss; ``patience`` epochs without a better one end training). Exact match, not loss,
    because the two part ways: a few confidently wrong answers raise the loss while more
    answers come out right. ``{"qa_epochs": kept epoch, "qa_epochs_run": epochs run,
    "qa_dev_em", "qa_dev_loss": its held-out scores (None without a hold-out)}``."""
    if not questions:
        raise DataError("closed-book QA needs training questions to fine-tune on")
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    questions = questions[: config.max_train_examples] if config.max_train_examples else questions
    fit, dev = _hold_out(questions, config.dev_fraction, seed)
    pad = tokenizer.pad_token_id

    def collate(batch):
        input_ids = pad_rows([r["input_ids"] for r in batch], pad)
        labels = pad_rows([r["labels"] for r in batch], -100)
        return {"input_ids": input_ids, "attention_mask": (input_ids != pad).long(), "labels": labels}

    loader = DataLoader(encode_qa(tokenizer, fit, max_length), batch_size=config.batch_size, shuffle=True,
                        collate_fn=collate, generator=torch.Generator().manual_seed(seed))
    dev_rows = encode_qa(tokenizer, dev, max_length) if dev else []
    dev_batches = [collate(dev_rows[i:i + 64]) for i in range(0, len(dev_rows), 64)]
    device = next(model.parameters()).device
    steps = config.epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    best = {"qa_epochs": 0, "qa_epochs_run": 0, "qa_dev_em": None, "qa_dev_loss": None}
    best_state = None
    for epoch in tqdm(range(1, config.epochs + 1), desc="qa fine-tune", disable=not progress, leave=False):
        model.train()
        for batch in loader:
            model(**{k: v.to(device) for k, v in batch.items()}).loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        best["qa_epochs_run"] = epoch
        if not dev:
            best["qa_epochs"] = epoch
            continue
        em = qa_scores(generate_answers(model, tokenizer, dev, max_new_tokens=config.max_new_tokens,
                                        max_length=max_length), dev)["em"]
        loss = _mean_token_loss(model, dev_batches, device)
        if best_state is None or (em, -loss) > (best["qa_dev_em"], -best["qa_dev_loss"]):
            best.update(qa_epochs=epoch, qa_dev_em=em, qa_dev_loss=loss)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best["qa_epochs"] >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), best


def _hold_out(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(fit, dev): a seeded ``fraction`` of the items held out; none when that is under one
    item or would leave nothing to fit."""
    n_dev = int(round(len(items) * fraction))
    if n_dev < 1 or n_dev >= len(items):
        return items, []
    # A permutation, not random_split: the benchmark numbers were measured with this split.
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    return [items[i] for i in order[n_dev:]], [items[i] for i in order[:n_dev]]


@torch.no_grad()
def _mean_token_loss(model, batches: list[dict], device) -> float:
    """Answer-token cross-entropy averaged over every labelled token of ``batches``."""
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        count = int((batch["labels"] != -100).sum())
        total += model(**{k: v.to(device) for k, v in batch.items()}).loss.item() * count  # loss: mean over tokens
        tokens += count
    return total / max(tokens, 1)


@torch.no_grad()
def generate_answers(model, tokenizer, questions: list[ClozeQuestion], *, num_beams: int = 1, max_new_tokens: int = 16,
                     max_length: int = 64, batch_size: int = 64) -> list[str]:
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        enc = tokenizer([question_text(q, tokenizer) for q in chunk], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        generated = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                                   num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        out.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
    return [text.strip() for text in out]


def qa_scores(predictions: list[str], questions: list[ClozeQuestion]) -> dict:
    em = [exact_match(p, q.answers) for p, q in zip(predictions, questions)]
    f1 = [token_f1(p, q.answers) for p, q in zip(predictions, questions)]
    return {"em": sum(em) / max(len(em), 1), "f1": sum(f1) / max(len(f1), 1)}


def evaluate_generation_qa(model, tokenizer, train: list[ClozeQuestion], evaluation: list[ClozeQuestion],
                           config: QAConfig | None = None, *, max_length: int = 64, seed: int = 0,
                           progress: bool = False) -> dict:
    """Fine-tune a copy on ``train``, generate for ``evaluation`` (greedy and beam search):
    ``qa_em``, ``qa_f1`` (greedy), ``qa_em_beam``, ``qa_f1_beam``, and how many gold answers
    are longer than the generation limit (those can only be matched by a shorter gold)."""
    config = config or QAConfig()
    if not evaluation:
        raise DataError("closed-book QA needs evaluation questions")
    tuned, fit = finetune_qa(model, tokenizer, train, config, max_length=max_length, seed=seed, progress=progress)
    greedy = generate_answers(tuned, tokenizer, evaluation, max_new_tokens=config.max_new_tokens, max_length=max_length)
    beam = generate_answers(tuned, tokenizer, evaluation, num_beams=config.num_beams,
                            max_new_tokens=config.max_new_tokens, max_length=max_length)
    too_long = sum(1 for q in evaluation
                   if len(tokenizer(q.answers[0], add_special_tokens=False)["input_ids"]) + 1 > config.max_new_tokens)
    g, b = qa_scores(greedy, evaluation), qa_scores(beam, evaluation)
    return {"qa_em": g["em"], "qa_f1": g["f1"], "qa_em_beam": b["em"], "qa_f1_beam": b["f1"],
            "answers_over_generation_limit": too_long, "generation_limit": config.max_new_tokens, **fit,
            "examples": [{"question": q.text, "gold": q.answers, "greedy": p, "beam": pb}
                         for q, p, pb in list(zip(evaluation, greedy, beam))[:5]]}
