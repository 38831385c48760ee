"""The ``perf`` suite: speed and memory, each as a ratio measured side by side in one run.

1. collator throughput: ``MaskingCollator`` with each policy against Hugging Face's
   ``DataCollatorForLanguageModeling`` on the same batches (``collator_throughput.py``);
2. policy-network overhead: one MLM training step as ``train.pretrain`` takes it (mask +
   forward + backward + AdamW) of a ``mini`` BERT (4 x 256; ``tiny`` for --quick), batch
   32 x 128 (x 64), with the ``random`` policy against the same step with an (untrained)
   ``learned`` policy network scoring the batch first; interleaved;
3. meta-step cost per backend (time and peak memory against a plain MLM step;
   ``meta_step_cost.py`` in a subprocess, which measures CPU memory in fresh processes);
4. intermediate pre-training throughput: tokens per second of ``train.pretrain`` on the
   synthetic world with ``random``, ``salient_span`` and a ``learned`` policy; short runs
   in interleaved rounds, median per policy;
5. the same loop against a plain Hugging Face ``Trainer`` with ``DataCollatorForLanguageModeling``
   (same model, data, optimizer and steps; tokens/s and final MLM loss), and the loop as
   1 process x 1 thread, 1 x 2 and 2 processes x 1 (``trainer_baseline.py``; the run
   lengths of section 4).

Numbers depend on the machine; ratios are what the suite is for.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from .report import bench_command, write_suite
from .tables import markdown_table

FULL = dict(collator_batches=200, train_model="mini", train_length=128, train_repeats=20,
            meta_args=["--repeats", "9"], pretrain_steps=150, pretrain_rounds=3, baseline_scaling=True)
QUICK = dict(collator_batches=40, train_model="tiny", train_length=64, train_repeats=6,
             meta_args=["--repeats", "3", "--layers", "2", "--hidden", "128", "--batch", "8", "--length", "64"],
             pretrain_steps=60, pretrain_rounds=2, baseline_scaling=True)
# Section 5 takes the run lengths of section 4 (pretrain_steps, pretrain_rounds);
# baseline_scaling=False leaves out its process/thread runs (fresh subprocesses, torchrun).


def _vocab_file(data_dir: str | None) -> str | None:
    """BERT's WordPiece vocabulary file in the data directory, when it is there."""
    root = data_dir or os.environ.get("MASKPOLICY_DATA_DIR")
    vocab = os.path.join(root, "vocab", "bert_base_uncased_vocab.txt") if root else ""
    return vocab if os.path.isfile(vocab) else None


def _tokenizer(data_dir: str | None):
    """BERT's WordPiece vocabulary when the data directory has it, else the synthetic world's."""
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import load_vocab_tokenizer, tokenizer_for_task

    vocab = _vocab_file(data_dir)
    if vocab:
        return load_vocab_tokenizer(vocab), "BERT base uncased vocabulary (30,522)"
    return tokenizer_for_task(get_task("synthetic")), "synthetic-world WordPiece vocabulary"


def collator_rows(tokenizer, batches: int) -> list[dict]:
    from .collator_throughput import run

    result = run(tokenizer, 32, 128, batches, ("random", "whole_word", "span", "salient_span"))
    return [{"measure": "collator", "variant": name, "value": f"{tps:,}", "unit": "tokens/s",
             "ratio": f"{result['ratio_vs_hf'][name]:.2f}", "reference": "HF collator"}
            for name, tps in result["tokens_per_second"].items()]


def policy_overhead_rows(tokenizer, repeats: int, model_name: str = "mini", length: int = 128) -> list[dict]:
    """Training step with ``random`` vs with a learned policy network (interleaved medians)."""
    from maskpolicy.policies import LearnedPolicy, Masker, MaskingConfig, get_policy
    from maskpolicy.train.models import preset_model
    from maskpolicy.train.head import masked_lm_loss

    torch.manual_seed(0)
    model = preset_model(model_name, len(tokenizer), length, tokenizer.pad_token_id or 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(5, len(tokenizer), (32, length))
    ids[:, 0] = tokenizer.cls_token_id
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    maskers = {"random": Masker(get_policy("random", tokenizer), MaskingConfig(fill="ranking")),
               "learned": Masker(LearnedPolicy(tokenizer).eval(), MaskingConfig(fill="ranking"))}

    def step(masker) -> None:
        masked = masker(batch, generator=torch.Generator().manual_seed(0))
        loss = masked_lm_loss(model, masked)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    times = {name: [] for name in maskers}
    for name, masker in maskers.items():  # warm-up
        step(masker)
    for _ in range(repeats):
        for name, masker in maskers.items():
            start = time.perf_counter()
            step(masker)
            times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return [{"measure": f"training step, {model_name} BERT 32 x {length}", "variant": f"policy {name}", "value": f"{ms[name]:.1f}",
             "unit": "ms/step", "ratio": f"{ms[name] / ms['random']:.3f}", "reference": "random policy"}
            for name in maskers]


def meta_rows(args: list[str]) -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "meta.json")
        cmd = [sys.executable, "-m", "maskpolicy.benchmarks.meta_step_cost", "--json", path, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if done.returncode != 0:
            raise RuntimeError(f"meta_step_cost failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    a = data["args"]
    what = f"meta-step, BERT {a['layers']} x {a['hidden']}, batch {a['batch']} x {a['length']}"
    rows = []
    for name, ms in data["ms"].items():
        rows.append({"measure": what, "variant": name, "value": f"{ms:.1f}", "unit": "ms/step",
                     "ratio": f"{ms / data['ms']['plain']:.2f}", "reference": "plain MLM step"})
        rows.append({"measure": what, "variant": name, "value": f"{data['peak_mb'][name]:.1f}", "unit": "peak MB",
                     "ratio": f"{data['peak_mb'][name] / data['peak_mb']['plain']:.2f}", "reference": "plain MLM step"})
    return rows, data


def pretrain_rows(steps: int, out: str, rounds: int = 3) -> list[dict]:
    from maskpolicy.meta.learn import LearnConfig, learn
    from maskpolicy.train.config import PretrainConfig
    from maskpolicy.train.pretrain import pretrain

    policy_dir = os.path.join(out, "policy")
    learn(LearnConfig(method="supervised", out=policy_dir, progress=False))
    runs = {name: [] for name in ("random", "salient_span", "learned")}
    for round_ in range(rounds):
        for name, policy in (("random", "random"), ("salient_span", "salient_span"), ("learned", policy_dir)):
            result = pretrain(PretrainConfig(policy=policy, steps=steps, out=os.path.join(out, f"{name}{round_}"),
                                             eval_every=0, save_every=0, evaluate=False, progress=False,
                                             overwrite=True))
            runs[name].append(result["tokens_per_second"])
    tps = {name: statistics.median(values) for name, values in runs.items()}
    return [{"measure": "intermediate pre-training, tiny BERT, synthetic:birthplace", "variant": name,
             "value": f"{v:,.0f}", "unit": "tokens/s", "ratio": f"{v / tps['random']:.2f}", "reference": "random policy"}
            for name, v in tps.items()]


def trainer_baseline_rows(steps: int, rounds: int, scaling: bool = True,
                          vocab_file: str | None = None) -> tuple[list[dict], dict]:
    """maskpolicy's loop against HF's Trainer (and, with ``scaling``, over processes and
    threads) on the synthetic world's own ~1,000-entry vocabulary; with ``vocab_file`` (BERT's
    WordPiece vocabulary) the side-by-side comparison again at 30,522 entries, where the
    vocabulary projection the loop skips at unmasked positions dominates a tiny model."""
    from .loop_workload import Workload
    from .trainer_baseline import measure, rows

    data = {"world_vocabulary": measure(steps, rounds, with_scaling=scaling)}
    table = rows(data["world_vocabulary"])
    if vocab_file:
        data["bert_vocabulary"] = measure(steps, rounds, with_scaling=False, workload=Workload(tokenizer=vocab_file))
        table += rows(data["bert_vocabulary"])
    return table, data


def run_perf(out: str, *, quick: bool = False, data_dir: str | None = None, sizes: dict | None = None,
             command: str = "maskpolicy bench --suite perf") -> dict:
    started = time.perf_counter()
    size = {**(QUICK if quick else FULL), **(sizes or {})}
    tokenizer, vocab = _tokenizer(data_dir)
    sections, rows = [], []
    collator = collator_rows(tokenizer, size["collator_batches"])
    overhead = policy_overhead_rows(tokenizer, size["train_repeats"], size["train_model"], size["train_length"])
    meta, meta_data = meta_rows(size["meta_args"])
    with tempfile.TemporaryDirectory() as tmp:
        throughput = pretrain_rows(size["pretrain_steps"], tmp, size["pretrain_rounds"])
    baseline, baseline_data = trainer_baseline_rows(size["pretrain_steps"], size["pretrain_rounds"],
                                                    size["baseline_scaling"], _vocab_file(data_dir))
    header = ["measure", "variant", "value", "unit", "ratio", "reference"]
    for heading, part in (("Collator throughput (batch 32, lengths 64-128, " + vocab + ")", collator),
                          ("Policy-network overhead in a training step", overhead),
                          ("Meta-step cost per backend (K = 1 SGD)", meta),
                          ("Intermediate pre-training throughput", throughput),
                          ("Against Hugging Face Trainer, and over processes and threads (same model, data, "
                           "optimizer and steps)", baseline)):
        sections.append((heading, markdown_table(part, header)))
        rows += part
    fd = meta_data.get("fd_vs_exact") or []
    if fd:
        sections.append(("fd against the exact hypergradient", "\n".join(
            f"- dropout {r['dropout']}, step {r['step']}: cosine {r['cosine']:.6f}, relative L2 {r['rel_l2']:.2e}" for r in fd)))
    title = (f"Speed and memory on this machine, {torch.get_num_threads()} torch threads; each ratio is against the "
             "reference measured in the same run.")
    command = bench_command(command, "quick" if quick else "full", out, data_dir=data_dir)
    return write_suite(out, suite="perf", title=title, sections=sections, rows=[], header=header, started=started,
                       preset="quick" if quick else "full", command=command, results={"rows": rows, "meta_step_cost": meta_data,
                                                   "trainer_baseline": baseline_data}, csv_rows=rows)
