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
import time

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from maskpolicy.policies import MaskingCollator
from maskpolicy.policies.masker import resolve_fill
from maskpolicy.policies.errors import ArtifactError, ConfigError

from .checkpoint import (latest_checkpoint, load_checkpoint, read_state, resume_differences, save_checkpoint,
                         save_directory_atomic, write_json_atomic)
from .config import PretrainConfig
from .data import (build_policy, corpus_dataset, load_task, policy_run_info, resolve_tokenizer,
                   save_built_pmi_table)
from .head_warmup import DEFAULT_STEPS as DEFAULT_HEAD_WARMUP_STEPS
from .head_warmup import warm_up_head
from .models import LoadReport, check_model_tokenizer
from .objectives import objective_for
from .progress import library_progress_bars
from .rng import untouched_random_state
from .run_dir import RunLock, check_run_dir, clean_run_dir

RESULTS_FILE = "results.json"
RUN_CONFIG_FILE = "maskpolicy_run.json"


def _optimizer(model, config: PretrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and LayerNorm weights (BERT convention).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def downstream_probe(lm, tokenizer, task, config: PretrainConfig) -> float:
    """Accuracy of a classifier fine-tuned from ``lm`` now (``config.probe`` or ``finetune``),
    leaving every random state and the LM's train/eval mode as they were, so that a run
    with probes pre-trains exactly like one without."""
    from .finetune import finetune_classifier

    was_training = lm.training
    try:
        with untouched_random_state():
            result = finetune_classifier(lm, tokenizer, task, config.probe or config.finetune,
                                         max_length=config.max_length, seed=config.seed)
    finally:
        lm.train(was_training)
    return result["accuracy"]


def _micro_seed(seed: int, micro_step: int, rank: int = 0) -> int:
    # Rank 0 draws what a one-process run draws; other ranks get their own streams.
    return (seed * 1_000_003 + micro_step + rank * 7_919_000_011) % (2**63 - 1)


def _accelerator(config: PretrainConfig) -> Accelerator:
    """One Accelerator per run. ``batch_size`` is the global batch: with ``split_batches``
    each process gets ``batch_size / processes`` rows of the same global batches a one-
    process run sees, and accelerate steps the LR schedule once per optimizer step (without
    it the schedule is stepped once per process and reaches zero at 1/N of the run)."""
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != config.mixed_precision:
        # accelerate keeps mixed precision in a process-wide singleton and refuses another
        # value later in the same process (a test session, a benchmark grid): reset that
        # singleton (the process group, in PartialState, is kept).
        AcceleratorState._reset_state()
    # Launched on several processes (torchrun, accelerate launch) without a GPU: accelerate
    # starts its gloo process group only when told cpu=True; otherwise every process would
    # run alone, each believing it is the main one.
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    cpu = config.device == "cpu" or (launched > 1 and not torch.cuda.is_available())
    try:
        accelerator = Accelerator(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            cpu=cpu,
            mixed_precision=config.mixed_precision,
            dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True,
                                                      data_seed=config.seed),
        )
    except ValueError as err:  # e.g. fp16 without a GPU
        raise ConfigError(f"--mixed-precision {config.mixed_precision}: {str(err).splitlines()[0]}") from None
    if accelerator.num_processes != launched:
        raise ConfigError(f"started as {launched} processes (WORLD_SIZE) but accelerate runs "
                          f"{accelerator.num_processes}: launch with torchrun --nproc_per_node N -m maskpolicy.cli ...")
    if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # accelerate would silently train in float32 here: say so instead.
        raise ConfigError("--mixed-precision fp16 needs a GPU; on the CPU use bf16")
    if config.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size {config.batch_size} is the global batch and must divide among "
                          f"{accelerator.num_processes} processes")
    return accelerator


def _head_warmup(config: PretrainConfig, model, report: LoadReport, dataset, tokenizer, accelerator) -> dict:
    """Warm up what the checkpoint lacked (``head_warmup.py``), saying what that is."""
    if not report.new_parameters:
        return {"steps": 0, "trained": []}
    if config.arch != "mlm":  # a seq2seq checkpoint missing weights: said, not warmed up
        accelerator.print(f"{config.model}: newly initialised (not in the checkpoint): {report.summary(model)}")
        return {"steps": 0, "trained": [], "new_parameters": report.new_parameters}
    steps = DEFAULT_HEAD_WARMUP_STEPS if config.head_warmup_steps is None else config.head_warmup_steps
    accelerator.print(f"{config.model}: newly initialised (not in the checkpoint): {report.summary(model)}; "
                      + (f"warming them up for {steps} steps with the body frozen" if steps else
                         "no head warm-up (--head-warmup-steps 0)"))
    info = warm_up_head(model, report.new_parameters, dataset, tokenizer, steps=steps, batch_size=config.batch_size,
                        learning_rate=config.head_warmup_lr, seed=config.seed, device=accelerator.device,
                        progress=config.progress and accelerator.is_local_main_process)
    if info["steps"]:
        accelerator.print(f"head warm-up: MLM loss {info['loss_first']:.3f} -> {info['loss_last']:.3f} "
                          f"in {info['seconds']:.0f} s")
    return {**info, "new_parameters": report.new_parameters}


def _resume_state(config: PretrainConfig, checkpoints: str, processes: int) -> tuple[str, dict]:
    """The checkpoint to resume from and its trainer state, refusing a different run."""
    resume_from = latest_checkpoint(checkpoints)
    if resume_from is None:
        raise ArtifactError(f"--resume: no checkpoint found in {checkpoints}")
    state = read_state(resume_from)
    diffs = resume_differences(state.get("config") or {}, config.to_dict(), state.get("processes"), processes)
    if diffs:
        raise ConfigError(f"--resume: the options differ from the run in {config.out} ({'; '.join(diffs)}); "
                          "resume with its options, or start a new run (another --out, or --overwrite)")
    return resume_from, state


def pretrain(config: PretrainConfig, on_step=None) -> dict:
    """Run pre-training (and the downstream evaluation); returns the results dict (on the
    main process; the other processes of a multi-process run get ``{"process_index": i}``).

    ``on_step(step, history)`` is called after every optimizer step and its checkpoint
    (progress reporting, early stop by raising; tests use it to kill a run mid-way)."""
    out = config.out
    checkpoints = os.path.join(out, "checkpoints")
    check_run_dir(out, resume=config.resume, overwrite=config.overwrite)  # before any work
    started = time.perf_counter()
    accelerator = _accelerator(config)
    main = accelerator.is_main_process
    # An existing --out is locked now, so a second run fails before building anything; a
    # new one is created only once everything below succeeded (a bad policy or model
    # leaves no empty directory behind).
    locks = [RunLock(out)] if main and os.path.isdir(out) else []
    try:
        with library_progress_bars(show=config.progress):
            return _pretrain_locked(config, accelerator, locks, checkpoints, started, on_step)
    finally:
        for lock in locks:
            lock.release()


def _pretrain_locked(config: PretrainConfig, accelerator, locks: list, checkpoints: str, started: float,
                     on_step) -> dict:
    out, main, rank = config.out, accelerator.is_main_process, accelerator.process_index
    resume_from, state = _resume_state(config, checkpoints, accelerator.num_processes) if config.resume else (None, {})
    set_seed(config.seed)
    task = load_task(config)
    tokenizer = resolve_tokenizer(config, task)
    dataset = corpus_dataset(tokenizer, task, config.max_length)
    # A learned policy's network is initialised before its weights load: that must not move
    # the state that initialises the model, or its cells would not start from the model of
    # the heuristic cells of the same seed (the paired comparisons).
    with untouched_random_state():
        policy = build_policy(config, tokenizer, task, dataset)
        objective = objective_for(config, policy, tokenizer)
    model, load_report = objective.build_model(tokenizer)
    check_model_tokenizer(model, tokenizer, config.max_length, config.model)
    if main:
        if not locks:
            locks.append(RunLock(out))
        removed = clean_run_dir(out, overwrite=config.overwrite)
        if removed and config.progress:
            accelerator.print(f"{out}: removed {', '.join(removed)}")
        save_built_pmi_table(policy, out)
    accelerator.wait_for_everyone()

    # A resumed run's weights (its warmed head included) come from the checkpoint.
    head_warmup = state.get("head_warmup") if resume_from else \
        _head_warmup(config, model, load_report, dataset, tokenizer, accelerator)

    collator = MaskingCollator(tokenizer)  # padding only here; masking happens on the device
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, collate_fn=collator.pad,
                        drop_last=len(dataset) >= config.batch_size)
    optimizer = _optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * config.steps), config.steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    policy.to(accelerator.device).eval()
    objective.attach(accelerator.unwrap_model(model))

    step, history = 0, []
    # Totals over every segment of a resumed run: time and tokens of the finished steps.
    prior_seconds, prior_tokens = 0.0, 0
    probing = bool(config.probe_every) and task.kind == "classification" and config.arch == "mlm"
    if resume_from:
        load_checkpoint(accelerator, resume_from)
        step, history = int(state["step"]), list(state["history"])
        prior_seconds, prior_tokens = float(state.get("train_seconds", 0.0)), int(state.get("tokens_seen", 0))
        accelerator.print(f"resumed from {resume_from} at step {step}")
    ga = config.gradient_accumulation_steps
    micro = step * ga
    bar = tqdm(total=config.steps, initial=step, desc=f"pretrain {config.policy}",
               disable=not (config.progress and accelerator.is_local_main_process))
    model.train()
    tokens_seen, loop_start = 0, time.perf_counter()  # this process, this segment

    def totals() -> tuple[float, int]:
        """(train seconds, tokens of every process) so far; a collective: every rank calls it."""
        tokens = int(accelerator.reduce(torch.tensor(tokens_seen, device=accelerator.device), "sum"))
        return prior_seconds + time.perf_counter() - loop_start, prior_tokens + tokens

    while step < config.steps:
        epoch, skip = divmod(micro, len(loader))
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            generator = torch.Generator().manual_seed(_micro_seed(config.seed, micro, rank))
            torch.manual_seed(_micro_seed(config.seed + 1, micro, rank))  # dropout
            with accelerator.accumulate(model):
                loss = objective.loss(model, batch, generator)
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
            bar.set_postfix(loss=f"{loss.item():.3f}")  # this process's batch: no collective per step
            last = step == config.steps
            # eval_every = 0: only at the end, and not at all when evaluate is off (an LM
            # warm-up's score is nobody's result). Only the main process evaluates.
            if (config.eval_every and step % config.eval_every == 0) or (last and (config.eval_every or config.evaluate)):
                loss_value = float(accelerator.reduce(loss.detach(), "mean"))  # the mean over processes, recorded
                if main:
                    lm = accelerator.unwrap_model(model)
                    metrics = objective.evaluate(lm, tokenizer, task, quick=True)
                    if probing and (step % config.probe_every == 0 or last):
                        metrics["probe_accuracy"] = downstream_probe(lm, tokenizer, task, config)
                    history.append({"step": step, "loss": round(loss_value, 5),
                                    "learning_rate": scheduler.get_last_lr()[0], **metrics})
                    bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                                           if isinstance(v, float)))
                accelerator.wait_for_everyone()
            if (config.save_every and step % config.save_every == 0) or last:
                seconds, tokens = totals()
                save_checkpoint(accelerator, checkpoints, step,
                                {"step": step, "history": history, "config": config.to_dict(),
                                 "processes": accelerator.num_processes, "head_warmup": head_warmup,
                                 "train_seconds": round(seconds, 3),
                                 "tokens_seen": tokens}, keep=config.keep_checkpoints)
            if on_step is not None:
                on_step(step, history)
            if last:
                break
    bar.close()
    train_seconds, total_tokens = totals()
    if not main:
        accelerator.wait_for_everyone()  # the main process writes the model and evaluates
        return {"process_index": rank}

    lm = accelerator.unwrap_model(model)
    run_info = {"config": config.to_dict(), "policy": policy_run_info(policy, task, dataset),
                "fill": resolve_fill(config.masking, policy),  # the config's, else the learned policy's choice
                "fill_transfer": getattr(policy, "transfer", None),  # why a transferred policy fills at random
                "processes": accelerator.num_processes, "head_warmup": head_warmup}

    def write_model(tmp: str) -> None:
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(os.path.join(tmp, RUN_CONFIG_FILE), run_info)

    save_directory_atomic(os.path.join(out, "model"), write_model)
    results = {**run_info, "history": history, "steps": step,
               "resumed_from_step": int(state["step"]) if resume_from else None,
               "train_seconds": round(train_seconds, 2),
               "tokens_per_second": round(total_tokens / train_seconds, 1) if train_seconds > 0 and total_tokens else None}
    if config.evaluate:
        results["metrics"] = objective.evaluate(lm, tokenizer, task, quick=False, progress=config.progress)
    results["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_json_atomic(os.path.join(out, RESULTS_FILE), results)
    accelerator.wait_for_everyone()
    return results
