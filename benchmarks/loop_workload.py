"""The workload both sides of the pre-training benchmarks train on: maskpolicy's ``pretrain``
settings for a tiny BERT on the synthetic world (or a given tokenizer), the corpus as
``pretrain`` builds it, and the loop time and tokens a finished run recorded.

Shared by ``trainer_baseline.py`` (against HF's Trainer) and ``process_scaling.py`` (over
processes and threads), so that both measure the same run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

TASK = "synthetic:birthplace"
MODEL = "tiny"
BATCH_SIZE = 32
MAX_LENGTH = 64
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.06


@dataclass(frozen=True)
class Workload:
    """What both sides train on: the task's corpus, tokenised by ``tokenizer`` (a directory or
    WordPiece vocab file; default: the WordPiece tokenizer ``pretrain`` builds from the task).
    The vocabulary size decides how much the masked-position projection saves."""

    task_options: dict = field(default_factory=dict)
    tokenizer: str | None = None

    def flags(self) -> list[str]:
        out = [f for key, value in self.task_options.items() for f in ("--task-option", f"{key}={value}")]
        return out + (["--tokenizer", self.tokenizer] if self.tokenizer else [])


DEFAULT = Workload()


def pretrain_config(out: str, steps: int, seed: int, workload: Workload):
    from maskpolicy.train.config import PretrainConfig

    return PretrainConfig(task=TASK, task_options=dict(workload.task_options), tokenizer=workload.tokenizer,
                          policy="random", model=MODEL,
                          steps=steps, batch_size=BATCH_SIZE, max_length=MAX_LENGTH, learning_rate=LEARNING_RATE,
                          weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO, seed=seed, out=out, eval_every=0,
                          save_every=0, evaluate=False, progress=False, overwrite=True, device="cpu")


def corpus(seed: int = 0, workload: Workload = DEFAULT):
    """(tokenizer, dataset) exactly as ``pretrain`` builds them for this task."""
    from maskpolicy.train.data import corpus_dataset, load_task, resolve_tokenizer

    config = pretrain_config("unused", 1, seed, workload)
    task = load_task(config)
    tokenizer = resolve_tokenizer(config, task)
    return tokenizer, corpus_dataset(tokenizer, task, MAX_LENGTH)


def loop_state(out: str) -> dict:
    """The final checkpoint's trainer state of a maskpolicy run: loop seconds measured before
    that checkpoint was written, and the tokens of every process."""
    from maskpolicy.train.checkpoint import latest_checkpoint, read_state

    return read_state(latest_checkpoint(os.path.join(out, "checkpoints")))
