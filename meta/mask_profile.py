"""What a policy's masks cover, drawn the way pre-training draws them.

Answer recall (``metrics.py``) asks only whether the answers are in the budget. What the
rest of the budget hides matters as much: masking the subject of a fact together with its
answer removes exactly the association a question about that subject asks for. This
profile samples masks with the run's ``MaskingConfig`` (Gumbel draws, the same fill rule,
the same extras as ``maskpolicy.train.data.corpus_dataset`` provides) over the corpus passages that
hold answers of one split, and reports

- ``answer_masked``: share of the gold answer tokens masked;
- ``answer_whole``: share of the answer spans masked whole (every token of the span);
- ``key_masked``: share of the tokens of the passage's ``key`` (the subject: an entity name,
  where the corpus states it) masked, when the task has keys that occur in the passages;
- ``key_masked_with_answer``: the same share over the passages whose answer is masked whole:
  the subject hidden exactly where the model must tie the answer to it;
- ``other_masked``: share of the remaining tokens masked; ``masks_per_row``: mean mask count.
"""
from __future__ import annotations

import torch

from maskpolicy.policies import Masker, MaskingConfig, MaskingPolicy
from maskpolicy.tasks.base import Passage, Span, Task
from maskpolicy.tasks.features import encode_passages
from maskpolicy.tasks.text import find_whole_word


def _padded(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=torch.long)


@torch.no_grad()
def mask_profile(policy: MaskingPolicy, tokenizer, task: Task, masking: MaskingConfig | None = None, *,
                 split: str = "eval", max_length: int = 64, seed: int = 0, draws: int = 3,
                 batch_size: int = 256) -> dict:
    """Shares of answer, key and other tokens that sampled masks cover (see the module doc).

    ``draws`` independent mask draws per passage (seeded by ``seed``) are pooled. Returns an
    empty dict when no passage holds an answer span of ``split``."""
    masking = masking or MaskingConfig()
    passages = [p for p in task.corpus if any(s.split == split for s in p.spans)]
    if not passages:
        return {}
    # The same text twice: once with the answer spans, once with the key occurrences as spans.
    keyed = [Passage(p.text, [Span(a, b) for a, b in find_whole_word(p.text, p.key)] if p.key else [], p.key)
             for p in passages]
    answers = encode_passages(tokenizer, passages, max_length=max_length, span_splits=(split,))
    oracle = encode_passages(tokenizer, passages, max_length=max_length)  # what pre-training passes as span_ids
    keys = encode_passages(tokenizer, keyed, max_length=max_length, span_splits=("train",))
    ids = _padded(answers["input_ids"], policy.vocab.pad_id)  # [N, T]
    attention = _padded([[1] * len(r) for r in answers["input_ids"]], 0)
    word_ids = _padded(answers["word_ids"], -1)
    answer_span = _padded(answers["span_ids"], -1)  # [N, T] span index, -1 outside
    gold = _padded(oracle["span_ids"], -1)
    key_tok = _padded(keys["span_ids"], -1) >= 0  # [N, T] bool
    has_key = key_tok.any(dim=1)  # [N]
    masker = Masker(policy, masking)
    device = policy.special_ids.device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = policy.training
    policy.eval()
    sums = dict(answer=0.0, answer_tokens=0.0, whole=0.0, spans=0.0, key=0.0, key_tokens=0.0,
                hidden_subject=0.0, answered_rows=0.0, other=0.0, other_tokens=0.0, masks=0.0, rows=0.0)
    try:
        for _ in range(draws):
            for start in range(0, ids.shape[0], batch_size):
                sl = slice(start, start + batch_size)
                mask, _ = masker.select(ids[sl].to(device), attention[sl].to(device), generator,
                                        word_ids=word_ids[sl].to(device), span_ids=gold[sl].to(device))
                mask = mask.cpu()  # [b, T]
                span, key = answer_span[sl], key_tok[sl] & attention[sl].bool()
                is_answer = span >= 0
                other = attention[sl].bool() & ~is_answer & ~key & (word_ids[sl] >= 0)
                sums["answer"] += float((mask & is_answer).sum())
                sums["answer_tokens"] += float(is_answer.sum())
                sums["key"] += float((mask & key).sum())
                sums["key_tokens"] += float(key.sum())
                sums["other"] += float((mask & other).sum())
                sums["other_tokens"] += float(other.sum())
                sums["masks"] += float(mask.sum())
                sums["rows"] += mask.shape[0]
                # Per span: masked whole? Per row with a whole answer masked: every key token hidden?
                for r in range(mask.shape[0]):
                    ids_r = span[r][is_answer[r]].unique()
                    whole = [bool(mask[r][span[r] == s].all()) for s in ids_r.tolist()]
                    sums["whole"] += sum(whole)
                    sums["spans"] += len(whole)
                    if any(whole) and bool(has_key[sl][r]):
                        sums["answered_rows"] += float(key[r].sum())
                        sums["hidden_subject"] += float((mask[r] & key[r]).sum())
    finally:
        policy.train(was_training)

    def share(num: str, den: str):
        return round(sums[num] / sums[den], 4) if sums[den] else None

    return {
        "answer_masked": share("answer", "answer_tokens"),
        "answer_whole": share("whole", "spans"),
        "key_masked": share("key", "key_tokens"),
        "key_masked_with_answer": share("hidden_subject", "answered_rows"),
        "other_masked": share("other", "other_tokens"),
        "masks_per_row": share("masks", "rows"),
        "passages": len(passages), "draws": draws, "fill": masker.fill,
    }
