"""General and intermediate MLM pre-training driven by any masking policy.

The loop follows the shape of Hugging Face's ``run_mlm_no_trainer`` example: accelerate
prepares model, optimizer, data and schedule; AdamW with linear warm-up and decay;
gradient accumulation; periodic evaluation; ``save_state`` checkpoints. What it adds:

- the mask comes from a policy (``policies.Masker``), applied on the device after the
  batch is padded, so a policy network runs where the model runs;
- determinism for a seed: data order from accelerate's seedable sampler (per epoch), mask
  and dropout randomness re-seeded from (seed, micro-step). A resumed run therefore
  replays exactly what the uninterrupted run would have done;
- downstream probes (``probe_every``, classification tasks): a classifier fine-tuned from
  the current model at evaluation steps, with all random states restored afterwards, so
  the history holds a downstream compute curve and the run itself is unchanged;
- checkpoints are atomic (see ``checkpoint.py``) and results land in ``out/results.json``
  next to ``out/model`` (model + tokenizer + run config).

General pre-training is the same call with a preset model and a general corpus
(e.g. ``--task wikitext2 --model tiny``); intermediate pre-training starts from
``--model DIR`` (or a preset) on the task's in-domain corpus.
"""
from __future__ import annotations

import os
import random
import time

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from policies import Masker, MaskingCollator
from policies.errors import ArtifactError

from .checkpoint import latest_checkpoint, read_state, save_checkpoint, save_directory_atomic, write_json_atomic
from .config import PretrainConfig
from .data import build_policy, corpus_dataset, load_task, policy_run_info, resolve_tokenizer
from .evaluate import evaluate_task
from .head import logits_at
from .models import check_model_tokenizer, is_preset, load_masked_lm, preset_model

RESULTS_FILE = "results.json"
RUN_CONFIG_FILE = "maskpolicy_run.json"


def _optimizer(model, config: PretrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and LayerNorm weights (BERT convention).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def masked_lm_loss(model, batch: dict, head: torch.nn.Module | None = None) -> torch.Tensor:
    """Mean MLM cross-entropy over labelled positions, equal to ``model(**batch).loss``, with
    the vocabulary projection applied at the labelled positions only (``head.projection_at``).
    Models without a standard output-embedding module fall back to the model's own loss.
    ``head``: the output embeddings
    when ``model`` is wrapped (DDP): the hook goes on the inner module, the call through the
    wrapper so that gradients are still synchronised."""
    labels = batch["labels"]  # [B, T], -100 where not masked
    selected = labels != -100  # [B, T]
    logits = logits_at(model, {k: v for k, v in batch.items() if k != "labels"}, selected, head)  # [n, V]
    if not bool(selected.any()):  # a policy that may mask fewer (fill "none") masked nothing here:
        return logits.sum() * 0.0  # a zero loss with a graph (the mean over no token would be NaN)
    return torch.nn.functional.cross_entropy(logits, labels[selected])


def downstream_probe(lm, tokenizer, task, config: PretrainConfig) -> float:
    """Accuracy of a classifier fine-tuned from ``lm`` now (``config.probe`` or ``finetune``),
    leaving every random state and the LM's train/eval mode as they were, so that a run
    with probes pre-trains exactly like one without."""
    from .finetune import finetune_classifier

    python_state, numpy_state = random.getstate(), np.random.get_state()
    was_training = lm.training
    try:
        with torch.random.fork_rng():
            result = finetune_classifier(lm, tokenizer, task, config.probe or config.finetune,
                                         max_length=config.max_length, seed=config.seed)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        lm.train(was_training)
    return result["accuracy"]


def _micro_seed(seed: int, micro_step: int) -> int:
    return (seed * 1_000_003 + micro_step) % (2**63 - 1)


def pretrain(config: PretrainConfig, on_step=None) -> dict:
    """Run pre-training (and the downstream evaluation); returns the results dict.

    ``on_step(step, history)`` is called after every optimizer step and its checkpoint
    (progress reporting, early stop by raising; tests use it to kill a run mid-way)."""
    out = config.out
    checkpoints = os.path.join(out, "checkpoints")
    resume_from = None
    if config.resume:
        resume_from = latest_checkpoint(checkpoints)
        if resume_from is None:
            raise ArtifactError(f"--resume: no checkpoint found in {checkpoints}")
    started = time.perf_counter()
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        cpu=config.device == "cpu",
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    set_seed(config.seed)
    task = load_task(config)
    tokenizer = resolve_tokenizer(config, task)
    dataset = corpus_dataset(tokenizer, task, config.max_length)
    os.makedirs(out, exist_ok=True)
    policy = build_policy(config, tokenizer, task, dataset, out)
    if is_preset(config.model):
        model = preset_model(config.model, len(tokenizer), config.max_length, tokenizer.pad_token_id, **config.model_options)
    else:
        model = load_masked_lm(config.model)
    check_model_tokenizer(model, tokenizer, config.max_length)

    collator = MaskingCollator(tokenizer)  # padding only here; masking happens on the device
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, collate_fn=collator.pad,
                        drop_last=len(dataset) >= config.batch_size)
    optimizer = _optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * config.steps), config.steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    policy.to(accelerator.device).eval()
    masker = Masker(policy, config.masking)
    head = accelerator.unwrap_model(model).get_output_embeddings()

    step, history = 0, []
    probing = bool(config.probe_every) and task.kind == "classification"
    if resume_from:
        accelerator.load_state(resume_from)
        state = read_state(resume_from)
        step, history = int(state["step"]), list(state["history"])
        accelerator.print(f"resumed from {resume_from} at step {step}")
    ga = config.gradient_accumulation_steps
    micro = step * ga
    bar = tqdm(total=config.steps, initial=step, desc=f"pretrain {config.policy}",
               disable=not (config.progress and accelerator.is_local_main_process))
    model.train()
    tokens_seen, loop_start = 0, time.perf_counter()
    while step < config.steps:
        epoch, skip = divmod(micro, len(loader))
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            generator = torch.Generator().manual_seed(_micro_seed(config.seed, micro))
            torch.manual_seed(_micro_seed(config.seed + 1, micro))  # dropout
            with accelerator.accumulate(model):
                masked = masker(batch, generator=generator)
                loss = masked_lm_loss(model, masked, head)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            micro += 1
            tokens_seen += int(batch["attention_mask"].sum())
            if micro % ga:
                continue
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            last = step == config.steps
            # eval_every = 0: only at the end, and not at all when evaluate is off (an LM
            # warm-up's score is nobody's result).
            if (config.eval_every and step % config.eval_every == 0) or (last and (config.eval_every or config.evaluate)):
                metrics = evaluate_task(accelerator.unwrap_model(model), tokenizer, task,
                                        max_length=config.max_length, quick=True)
                if probing and (step % config.probe_every == 0 or last):
                    metrics["probe_accuracy"] = downstream_probe(accelerator.unwrap_model(model), tokenizer, task, config)
                history.append({"step": step, "loss": round(loss.item(), 5), **metrics})
                bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            if (config.save_every and step % config.save_every == 0) or last:
                save_checkpoint(accelerator, checkpoints, step, {"step": step, "history": history, "config": config.to_dict()},
                                keep=config.keep_checkpoints)
            if on_step is not None:
                on_step(step, history)
            if last:
                break
    bar.close()
    train_seconds = time.perf_counter() - loop_start

    lm = accelerator.unwrap_model(model)
    run_info = {"config": config.to_dict(), "policy": policy_run_info(policy, task, dataset)}

    def write_model(tmp: str) -> None:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(os.path.join(tmp, RUN_CONFIG_FILE), run_info)

    save_directory_atomic(os.path.join(out, "model"), write_model)
    results = {**run_info, "history": history, "steps": step,
               "train_seconds": round(train_seconds, 2),
               "tokens_per_second": round(tokens_seen / train_seconds, 1) if train_seconds > 0 and tokens_seen else None}
    if config.evaluate:
        results["metrics"] = evaluate_task(lm, tokenizer, task, max_length=config.max_length,
                                           finetune=config.finetune, seed=config.seed, progress=config.progress)
    results["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_json_atomic(os.path.join(out, RESULTS_FILE), results)
    return results

