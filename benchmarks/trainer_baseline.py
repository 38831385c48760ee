"""Intermediate pre-training throughput: maskpolicy's loop against a plain Hugging Face Trainer.

What is measured, in one process, side by side:

- **maskpolicy**: ``train.pretrain`` with ``policy="random"`` (15% of the maskable tokens,
  80/10/10 corruption; the MLM loss projects to the vocabulary at the masked positions only,
  ``train/head.py``);
- **HF Trainer**: ``transformers.Trainer`` with ``DataCollatorForLanguageModeling``
  (mlm_probability 0.15, 80/10/10; ``BertForMaskedLM`` computes logits at every position).

Both sides get a fresh ``tiny`` BERT (2 x 128) built by ``preset_model`` after the same
seed (identical initial weights), the synthetic:birthplace corpus tokenised exactly as
``pretrain`` does it (``corpus_dataset`` with the tokenizer ``resolve_tokenizer`` builds),
batch 32, max_length 64, AdamW (lr 1e-3, weight decay 0.01 except biases and LayerNorm,
gradient clipping 1.0), linear warm-up over 6% of the steps then linear decay, the same number
of optimizer steps, and the same batches in the same order (both sample through accelerate's
seedable sampler with data seed = seed, re-seeded per epoch; last partial batch dropped).
The HF optimizer is ``optim="adamw_torch"`` (``torch.optim.AdamW``, what maskpolicy uses)
so that the optimizer implementation is not part of the difference; ``--hf-optim`` picks
another. Masking differs in one detail only: maskpolicy masks exactly 15% of each row, the
HF collator each token with probability 0.15 (the same rate in expectation).

Timed: the training loop only, with no evaluation and no checkpoint inside it. maskpolicy:
the ``train_seconds`` its final checkpoint records (measured before that checkpoint is
written; results.json's figure includes the write). HF: from ``on_train_begin`` to
``on_train_end`` (a callback), i.e. after the Trainer has built its data loader, optimizer
and schedule (the Trainer's own ``train_runtime``, taken at nearly the same points in
transformers 5, is kept in results.json).
Tokens: non-padding tokens of the batches consumed (sum of attention_mask), counted by
maskpolicy's loop on its side and by a forward pre-hook on the model on the HF side.
Loss: both final models are scored on the same fixed masked batches (the first 256 corpus
rows, masked once by a seeded ``DataCollatorForLanguageModeling``; they are training rows,
so this compares how far each run got, not generalisation).

The two sides alternate which goes first over ``--repeats`` rounds (after one untimed
two-step warm-up of each); the table gives medians. ``ratio`` = maskpolicy tokens/s / HF
tokens/s (> 1: maskpolicy's loop is faster; the masked-position projection is the expected
reason); the loss ratio says whether both reached the same loss (about 1.0 expected). What
to expect from the projection alone: this corpus's WordPiece vocabulary has about 1,000
entries, so at 2 x 128 the vocabulary projection is about 24% of the forward multiply-adds
per token (130k of 540k); skipping it at 85% of the positions bounds the gain near 1.26x in
arithmetic, before per-step overheads (optimizer, Python) that both loops pay alike.

Scaling (``--no-scaling`` to skip): the same maskpolicy run over processes and threads
(``process_scaling.py``). The settings both parts share are in ``loop_workload.py``.

    python -m maskpolicy.benchmarks.trainer_baseline --steps 400 --out runs/trainer_baseline [--repeats 3]

Outputs in ``--out``: table.md (printed too), table.csv, results.json (every raw number,
machine, thread counts, the command). ``maskpolicy bench --suite perf`` runs it as a section.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict

import torch

from .loop_workload import (BATCH_SIZE, DEFAULT, LEARNING_RATE, MAX_LENGTH, MODEL, TASK, WARMUP_RATIO,
                            WEIGHT_DECAY, Workload, corpus, loop_state, pretrain_config)
from .process_scaling import SCALING, scaling
from .report import write_suite

EVAL_ROWS = 256  # corpus rows of the fixed masked batches both final models are scored on
EVAL_MASK_SEED = 1234
WARMUP_STEPS = 2  # one untimed run per side first: imports, allocator and thread pools warmed
MP, HF = "maskpolicy pretrain (policy random)", "HF Trainer + DataCollatorForLanguageModeling"
HEADER = ["measure", "variant", "value", "unit", "ratio", "reference"]


def fixed_eval_batches(tokenizer, dataset, rows: int = EVAL_ROWS) -> list[dict]:
    """The corpus's first ``rows`` rows, masked once by a seeded HF collator: the same tensors
    score every final model, so the loss differs only by the model."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=EVAL_MASK_SEED)
    ids = dataset.select(range(min(rows, len(dataset))))["input_ids"]
    return [collator([{"input_ids": row} for row in ids[i:i + BATCH_SIZE]]) for i in range(0, len(ids), BATCH_SIZE)]


@torch.no_grad()
def fixed_batch_loss(model, batches: list[dict]) -> float:
    """Mean MLM cross-entropy over every masked token of ``batches`` (eval mode, no dropout)."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        selected = batch["labels"] != -100
        total += float(torch.nn.functional.cross_entropy(logits[selected], batch["labels"][selected], reduction="sum"))
        count += int(selected.sum())
    return total / count


def run_maskpolicy(out: str, steps: int, batches: list[dict], seed: int = 0, workload: Workload = DEFAULT) -> dict:
    """One in-process ``pretrain`` run; its loop time, tokens and final fixed-batch loss."""
    from transformers import BertForMaskedLM

    from maskpolicy.train.pretrain import pretrain

    result = pretrain(pretrain_config(out, steps, seed, workload))
    state = loop_state(out)
    model = BertForMaskedLM.from_pretrained(os.path.join(out, "model"))
    seconds, tokens = float(state["train_seconds"]), int(state["tokens_seen"])
    return {"steps": int(result["steps"]), "seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds,
            "results_json_tokens_per_second": result["tokens_per_second"],
            "results_json_train_seconds": result["train_seconds"], "eval_loss": fixed_batch_loss(model, batches),
            "threads": torch.get_num_threads()}


def _loop_timer():
    """A TrainerCallback timing the Trainer's loop (first step to last), set-up excluded."""
    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        begin = end = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    return LoopTimer()


def same_decay_groups(trainer, model) -> bool:
    """Whether the Trainer exempts from weight decay exactly what maskpolicy's ``_optimizer``
    exempts (every parameter with fewer than 2 dimensions: biases, LayerNorm)."""
    decayed = set(trainer.get_decay_parameter_names(model))
    return all((name in decayed) == (p.ndim >= 2) for name, p in model.named_parameters())


def run_hf(out: str, steps: int, tokenizer, dataset, batches: list[dict], seed: int = 0,
           optim: str = "adamw_torch") -> dict:
    """One in-process ``Trainer.train()`` run with maskpolicy's settings (see the module)."""
    from accelerate.utils import set_seed
    from transformers import DataCollatorForLanguageModeling, PrinterCallback, Trainer, TrainingArguments

    from maskpolicy.train.models import preset_model

    set_seed(seed)  # what pretrain does right before it builds the model: the same initial weights
    model = preset_model(MODEL, len(tokenizer), MAX_LENGTH, tokenizer.pad_token_id)
    args = TrainingArguments(
        output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY, warmup_steps=int(WARMUP_RATIO * steps), lr_scheduler_type="linear",
        max_grad_norm=1.0, optim=optim, seed=seed, data_seed=seed, eval_strategy="no", save_strategy="no",
        logging_steps=steps,  # one loss log, at the last step
        report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, dataloader_drop_last=True,
        dataloader_pin_memory=False)
    tokens: list[int] = []
    # Counted where the batch is consumed, not in the collator: accelerate's loader collates
    # one batch ahead of the loop.
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: tokens.append(int(kw["attention_mask"].sum())),
                                           with_kwargs=True)
    timer = _loop_timer()
    trainer = Trainer(model=model, args=args, train_dataset=dataset.select_columns(["input_ids"]),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
                      processing_class=tokenizer, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # its one log line would land in the middle of the table output
    output = trainer.train()
    hook.remove()
    seconds = timer.end - timer.begin
    return {"steps": int(trainer.state.global_step), "seconds": seconds, "tokens": sum(tokens),
            "tokens_per_second": sum(tokens) / seconds, "train_runtime": output.metrics["train_runtime"],
            "train_loss_mean": output.training_loss, "eval_loss": fixed_batch_loss(trainer.model, batches),
            "same_decay_groups": same_decay_groups(trainer, trainer.model), "optim": optim,
            "threads": torch.get_num_threads()}


def side_by_side(out: str, steps: int, repeats: int, *, seed: int = 0, warmup: bool = True,
                 optim: str = "adamw_torch", workload: Workload = DEFAULT) -> dict:
    """Both sides ``repeats`` times, alternating which goes first; raw runs and medians."""
    tokenizer, dataset = corpus(seed, workload)
    batches = fixed_eval_batches(tokenizer, dataset)
    sides = {
        "maskpolicy": lambda path, n: run_maskpolicy(path, n, batches, seed, workload),
        "hf": lambda path, n: run_hf(path, n, tokenizer, dataset, batches, seed, optim),
    }
    if warmup:
        for name, run_side in sides.items():
            run_side(os.path.join(out, f"warmup_{name}"), WARMUP_STEPS)
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for round_ in range(repeats):
        order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
        for name in order:
            runs[name].append(sides[name](os.path.join(out, f"{name}_{round_}"), steps))
    median = {name: {key: statistics.median(r[key] for r in rs) for key in ("tokens_per_second", "seconds", "eval_loss")}
              for name, rs in runs.items()}
    return {"steps": steps, "repeats": repeats, "runs": runs, "median": median,
            "ratio_tokens_per_second": median["maskpolicy"]["tokens_per_second"] / median["hf"]["tokens_per_second"],
            "ratio_eval_loss": median["maskpolicy"]["eval_loss"] / median["hf"]["eval_loss"],
            "vocab_size": len(tokenizer), "corpus_rows": len(dataset), "eval_rows": min(EVAL_ROWS, len(dataset)),
            "eval_masked_tokens": sum(int((b["labels"] != -100).sum()) for b in batches)}


def measure(steps: int, repeats: int = 3, *, with_scaling: bool = True, seed: int = 0,
            warmup: bool = True, optim: str = "adamw_torch", workload: Workload = DEFAULT) -> dict:
    """Everything this benchmark measures, raw. The run directories (models, checkpoints with
    optimizer state: tens of MB each) are temporary; their numbers are in the returned dict."""
    with tempfile.TemporaryDirectory(prefix="trainer_baseline_") as runs_dir:
        data = {"side_by_side": side_by_side(runs_dir, steps, repeats, seed=seed, warmup=warmup, optim=optim,
                                             workload=workload)}
        if with_scaling:
            data["scaling"] = scaling(runs_dir, steps, repeats, seed=seed, workload=workload)
    return data


def rows(data: dict) -> list[dict]:
    """Perf-table rows (``perf_suite`` columns): every ratio against the reference of its row."""
    sbs = data["side_by_side"]
    what = (f"intermediate pre-training, tiny BERT, vocabulary {sbs['vocab_size']:,}, batch {BATCH_SIZE} x {MAX_LENGTH}, "
            f"{sbs['steps']} steps")
    med = sbs["median"]
    out = []
    for name, variant in (("hf", HF), ("maskpolicy", MP)):
        out.append({"measure": what, "variant": variant, "value": f"{med[name]['tokens_per_second']:,.0f}",
                    "unit": "tokens/s", "ratio": f"{med[name]['tokens_per_second'] / med['hf']['tokens_per_second']:.2f}",
                    "reference": "HF Trainer"})
    for name, variant in (("hf", HF), ("maskpolicy", MP)):
        out.append({"measure": what, "variant": variant, "value": f"{med[name]['eval_loss']:.4f}",
                    "unit": "MLM loss, fixed masked batches", "ratio": f"{med[name]['eval_loss'] / med['hf']['eval_loss']:.3f}",
                    "reference": "HF Trainer"})
    if "scaling" in data:
        sc = data["scaling"]
        what = f"intermediate pre-training, maskpolicy loop on CPU, global batch {BATCH_SIZE} x {MAX_LENGTH}, {sc['steps']} steps"
        for name, tps in sc["median_tokens_per_second"].items():
            out.append({"measure": what, "variant": name, "value": f"{tps:,.0f}", "unit": "tokens/s",
                        "ratio": f"{sc['ratio_vs_1x1'][name]:.2f}", "reference": SCALING[0][0]})
    return out


def machine_info() -> dict:
    import accelerate
    import transformers

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def run(out: str, steps: int, repeats: int = 3, *, with_scaling: bool = True, seed: int = 0, warmup: bool = True,
        optim: str = "adamw_torch", workload: Workload = DEFAULT, command: str | None = None) -> dict:
    """Measure, then write table.md, table.csv and results.json to ``out``."""
    started = time.perf_counter()
    data = measure(steps, repeats, with_scaling=with_scaling, seed=seed, warmup=warmup, optim=optim,
                   workload=workload)
    table_rows = rows(data)
    title = (f"{TASK} ({data['side_by_side']['vocab_size']:,}-entry vocabulary), tiny BERT (2 x 128) from the same initial weights, the same batches, AdamW lr {LEARNING_RATE} "
             f"(decay {WEIGHT_DECAY}, warm-up {WARMUP_RATIO:.0%}), {steps} steps; medians of {repeats} alternating "
             f"rounds, in-process runs with {torch.get_num_threads()} torch threads. tokens/s: non-padding tokens / "
             "loop seconds (no evaluation or checkpoint inside). Loss: both final models on the same fixed masked "
             f"batches ({data['side_by_side']['eval_rows']} corpus rows). Each ratio is against the reference "
             "measured in the same run.")
    command = command or " ".join(["python -m maskpolicy.benchmarks.trainer_baseline", "--steps", str(steps),
                                   "--repeats", str(repeats), "--out", out] + ([] if with_scaling else ["--no-scaling"]))
    vocab = data["side_by_side"]["vocab_size"]
    report = write_suite(out, suite=f"trainer_baseline ({vocab:,}-entry vocabulary)", title=title, sections=[], rows=table_rows, header=HEADER,
                         started=started, command=command,
                         results={"machine_info": machine_info(), "settings": _settings(steps, repeats, seed, optim,
                                                                                         workload),
                                  "rows": table_rows, **data})
    return {**report, "data": data, "rows": table_rows}


def _settings(steps: int, repeats: int, seed: int, optim: str, workload: Workload) -> dict:
    return {"task": TASK, **asdict(workload), "model": MODEL, "batch_size": BATCH_SIZE,
            "max_length": MAX_LENGTH, "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY,
            "warmup_ratio": WARMUP_RATIO, "steps": steps, "repeats": repeats, "seed": seed, "hf_optim": optim,
            "eval_mask_seed": EVAL_MASK_SEED}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps of every run (default 400)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    ap.add_argument("--out", default="runs/trainer_baseline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-scaling", action="store_false", dest="scaling", help="skip the process/thread scaling runs")
    ap.add_argument("--no-warmup", action="store_false", dest="warmup", help="skip the untimed warm-up runs")
    ap.add_argument("--tokenizer", help="tokenizer directory or WordPiece vocab file for both sides (default: the "
                    "WordPiece tokenizer pretrain builds from the corpus, about 1,000 entries), e.g. "
                    "../shared/data/vocab/bert_base_uncased_vocab.txt (30,522)")
    ap.add_argument("--hf-optim", default="adamw_torch", help="TrainingArguments.optim (default adamw_torch, "
                    "maskpolicy's torch.optim.AdamW; the Trainer's own default is adamw_torch_fused)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        ap.error("--steps and --repeats must be >= 1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight save/load bars of every run; the table is the output
    command = "python -m maskpolicy.benchmarks.trainer_baseline " + " ".join(sys.argv[1:] if argv is None else argv)
    report = run(args.out, args.steps, args.repeats, with_scaling=args.scaling, seed=args.seed, warmup=args.warmup,
                 optim=args.hf_optim, workload=Workload(tokenizer=args.tokenizer), command=command)
    print(report["table"])


if __name__ == "__main__":
    main()
