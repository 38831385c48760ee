"""Collator throughput: MaskingCollator (any policy) against DataCollatorForLanguageModeling.

Both collators see the same pre-tokenised batches (lists of token ids, as a ``datasets``
column gives them) and are timed side by side in one process, alternating, so machine
noise hits both. Reported: tokens per second (real, non-padding tokens) and the ratio.

    python -m maskpolicy.benchmarks.collator_throughput --batch-size 32 --length 128 --batches 200
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from transformers import DataCollatorForLanguageModeling

from maskpolicy.policies import MaskingCollator


def make_features(tokenizer, num: int, length: int, seed: int = 0) -> list[dict]:
    """Random-length rows (length/2 .. length tokens) of ids drawn from the vocabulary."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    rows = []
    for _ in range(num):
        n = rng.randint(length // 2, length - 2)
        rows.append({"input_ids": [tokenizer.cls_token_id] + rng.choices(ids, k=n) + [tokenizer.sep_token_id]})
    return rows


def time_collators(collators: dict, batches: list[list[dict]], repeats: int = 3) -> dict:
    tokens = sum(len(f["input_ids"]) for b in batches for f in b)
    seconds = {name: [] for name in collators}
    for name, collate in collators.items():  # warm-up
        collate(batches[0])
    for _ in range(repeats):
        for name, collate in collators.items():
            start = time.perf_counter()
            for b in batches:
                collate(b)
            seconds[name].append(time.perf_counter() - start)
    return {name: tokens / statistics.median(s) for name, s in seconds.items()}


def run(tokenizer=None, batch_size: int = 32, length: int = 128, num_batches: int = 200, policies=("random",)) -> dict:
    if tokenizer is None:
        from maskpolicy.tasks.registry import get_task
        from maskpolicy.tasks.tokenizer import tokenizer_for_task

        tokenizer = tokenizer_for_task(get_task("synthetic"))
    feats = make_features(tokenizer, batch_size * num_batches, length)
    batches = [feats[i : i + batch_size] for i in range(0, len(feats), batch_size)]
    collators = {"hf DataCollatorForLanguageModeling": DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)}
    for p in policies:
        collators[f"MaskingCollator({p})"] = MaskingCollator(tokenizer, p, seed=0)
    tps = time_collators(collators, batches)
    base = tps["hf DataCollatorForLanguageModeling"]
    return {
        "batch_size": batch_size,
        "max_length": length,
        "batches": num_batches,
        "tokens_per_second": {k: round(v) for k, v in tps.items()},
        "ratio_vs_hf": {k: round(v / base, 2) for k, v in tps.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--policies", default="random,whole_word,span,salient_span")
    ap.add_argument("--vocab", help="WordPiece vocab file (default: tokenizer built from the synthetic world)")
    args = ap.parse_args()
    tokenizer = None
    if args.vocab:
        from maskpolicy.tasks.tokenizer import load_vocab_tokenizer

        tokenizer = load_vocab_tokenizer(args.vocab)
    result = run(tokenizer, args.batch_size, args.length, args.batches, tuple(args.policies.split(",")))
    for name, tps in result["tokens_per_second"].items():
        print(f"{name:40s} {tps:>12,} tokens/s   ratio {result['ratio_vs_hf'][name]:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
