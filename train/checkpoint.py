"""Atomic checkpoints that hold every process's state, and resuming from them.

A checkpoint is written into a hidden temporary directory next to its final place and
renamed into place only when complete (``os.replace`` is atomic on one filesystem), then
the ``latest`` pointer is swapped the same way. A run killed at any moment therefore
leaves either the previous checkpoint or the new one, never a half-written one.

    out/checkpoints/step-000500/   accelerate state: model, optimizer, scheduler (written by
                                   the main process) and random_states_<rank>.pkl (one per
                                   process) + trainer_state.json (step, history, config)
    out/checkpoints/latest         text file: "step-000500"

Every rank writes into the same temporary directory (its name is derived from the step,
so the ranks agree on it without talking); only the main process renames it into place.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil

from maskpolicy.policies.atomic import (  # noqa: F401  (re-exported: the rest of train/ imports them from here)
    TMP_PREFIX, honour_umask_tree, replace_directory, save_directory_atomic, write_json_atomic, write_text_atomic)
from maskpolicy.policies.errors import ArtifactError

STATE_FILE = "trainer_state.json"

# Options that decide what a run computes: a resumed run must have the same ones, or its
# results.json would describe a run that never happened. (Evaluation, logging, checkpoint
# cadence and the output location may change between segments.)
RUN_DEFINING = ("task", "task_options", "policy", "policy_options", "model", "model_options", "arch", "output",
                "tokenizer", "vocab_size", "steps", "batch_size", "gradient_accumulation_steps", "learning_rate",
                "weight_decay", "warmup_ratio", "max_length", "seed", "masking", "mixed_precision",
                "head_warmup_steps", "head_warmup_lr")


class _DropTiedWeightsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


@contextlib.contextmanager
def _without_tied_weights_notice():
    """accelerate warns on every ``save_state`` that BERT's tied decoder weights (the same
    tensor as the word embeddings) are stored once; they are tied again on load (resume is
    tested bit-for-bit), so only that notice is dropped, every other warning still shows."""
    logger = logging.getLogger("accelerate.utils.other")
    notice = _DropTiedWeightsNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def save_checkpoint(accelerator, checkpoints_dir: str, step: int, state: dict, keep: int = 2) -> str:
    """Called by every process; returns the checkpoint's path."""
    name = f"step-{step:06d}"
    final = os.path.join(checkpoints_dir, name)
    tmp = os.path.join(checkpoints_dir, TMP_PREFIX + name)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier attempt at this very step
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    with _without_tied_weights_notice():
        accelerator.save_state(tmp)  # weights/optimizer/scheduler on the main process, RNG state on every rank
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(os.path.join(tmp, STATE_FILE), state)
        honour_umask_tree(tmp)
        replace_directory(tmp, final)
        write_text_atomic(os.path.join(checkpoints_dir, "latest"), name)
        steps = complete_checkpoints(checkpoints_dir)
        for old in steps[:-keep]:  # keep the newest ``keep``
            shutil.rmtree(os.path.join(checkpoints_dir, old), ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def complete_checkpoints(checkpoints_dir: str) -> list[str]:
    """Names of the finished checkpoints (those with their state file), oldest first."""
    if not os.path.isdir(checkpoints_dir):
        return []
    return sorted(d for d in os.listdir(checkpoints_dir)
                  if d.startswith("step-") and os.path.isfile(os.path.join(checkpoints_dir, d, STATE_FILE)))


def _previous_hint(checkpoints_dir: str, bad: str) -> str:
    earlier = [d for d in complete_checkpoints(checkpoints_dir) if d < os.path.basename(bad)]
    if not earlier:
        return "no earlier checkpoint is left: start again with --overwrite"
    return f"remove it (rm -r {bad}) and --resume again to continue from {earlier[-1]}, the previous checkpoint"


def latest_checkpoint(checkpoints_dir: str) -> str | None:
    """The checkpoint ``latest`` names; the newest complete one when the pointer is missing
    (a run killed between renaming its checkpoint and updating the pointer); None if none."""
    pointer = os.path.join(checkpoints_dir, "latest")
    path = None
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8", errors="replace") as fh:
            path = os.path.join(checkpoints_dir, fh.read().strip())
    if path is None or not os.path.exists(path):  # no pointer yet, or its checkpoint was removed by hand
        found = complete_checkpoints(checkpoints_dir)
        return os.path.join(checkpoints_dir, found[-1]) if found else None
    if not os.path.isfile(os.path.join(path, STATE_FILE)):
        raise ArtifactError(f"checkpoint {path} named by {pointer} is missing or incomplete; "
                            + _previous_hint(checkpoints_dir, path))
    return path


def read_state(checkpoint: str) -> dict:
    try:
        with open(os.path.join(checkpoint, STATE_FILE), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as err:  # ValueError: JSON and UTF-8 decoding
        raise ArtifactError(f"checkpoint {checkpoint} is corrupt ({STATE_FILE}: {err}); "
                            + _previous_hint(os.path.dirname(checkpoint), checkpoint)) from None


def load_checkpoint(accelerator, checkpoint: str) -> None:
    """``accelerator.load_state`` with one clear error for a damaged checkpoint (a truncated
    weights file raises a ``SafetensorError`` deep inside), naming the previous one."""
    try:
        accelerator.load_state(checkpoint)
    except Exception as err:  # noqa: BLE001 - safetensors, torch.load and pickle raise many types
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ArtifactError(f"checkpoint {checkpoint} is corrupt ({type(err).__name__}: {detail}); "
                            + _previous_hint(os.path.dirname(checkpoint), checkpoint)) from None


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def resume_differences(saved: dict, current: dict, saved_processes: int | None = None,
                       processes: int = 1) -> list[str]:
    """``"name: saved -> current"`` for every run-defining option that differs."""
    old = _flatten({k: saved.get(k) for k in RUN_DEFINING if k in saved})
    new = _flatten({k: current.get(k) for k in RUN_DEFINING if k in saved})
    diffs = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
             if old.get(key) != new.get(key)]
    if saved_processes is not None and saved_processes != processes:
        # Each rank's random state is restored from its own file: the count must match.
        diffs.append(f"processes: {saved_processes} -> {processes}")
    return diffs
