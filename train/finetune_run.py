"""``maskpolicy finetune``: adapt a pretrained model to one task by a method (full | head |
mask) and write its results and its artifact.

OUT/results.json  accuracy (or cloze EM), trainable parameters, bytes stored per task,
                  the masked share per layer and overall (mask), losses, timings
OUT/model/        ``full``: the fine-tuned model (an ordinary HF model directory)
OUT/adapter/      ``head`` / ``mask``: head + packed mask + base fingerprint
OUT/baked/        ``mask`` with ``bake``: the masked model as an ordinary HF model directory
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field

from accelerate.utils import set_seed

from maskpolicy.policies.atomic import save_directory_atomic, write_json_atomic
from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.policies.paths import check_output_dir
from maskpolicy.tasks.registry import get_task

from .adapt import evaluate_task_model, train_loader, train_task_model
from .methods import METHODS, get_method, trainable_parameters
from .models import check_model_tokenizer, load_masked_lm_reporting, load_tokenizer
from .progress import library_progress_bars
from .run_dir import RunLock
from .sources import is_offline_source
from .task_models import TaskModel, build_task_model, num_labels_of
from .weightmask import WeightMaskConfig, baked_copy

OUTPUTS = ("model", "adapter", "baked", "results.json")


@dataclass
class FinetuneRunConfig:
    task: str = "mr"
    model: str | None = None  # masked-LM / encoder checkpoint dir, offline source (minilm-l6) or hub name
    method: str = "full"  # full | head | mask
    out: str = "runs/finetune"
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4  # full fine-tuning (body and head)
    head_learning_rate: float = 1e-3  # the head under ``head`` and ``mask``
    max_train_examples: int | None = None
    max_length: int = 64
    seed: int = 0
    mask: WeightMaskConfig = field(default_factory=WeightMaskConfig)
    bake: bool = False  # mask: also write OUT/baked/, an ordinary model with the mask applied
    tokenizer: str | None = None  # default: the model's
    data_dir: str | None = None
    task_options: dict = field(default_factory=dict)
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.mask, dict):
            unknown = set(self.mask) - set(WeightMaskConfig.__dataclass_fields__)
            if unknown:
                raise ConfigError(f"unknown weight mask option(s): {', '.join(sorted(unknown))}")
            self.mask = WeightMaskConfig(**self.mask)
        if self.method not in METHODS:
            raise ConfigError(f"unknown fine-tuning method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not self.model:
            raise ConfigError("finetune needs --model (a checkpoint directory, an offline model such as minilm-l6, "
                              "or a hub name)")
        for name in ("epochs", "batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_train_examples is not None and (not isinstance(self.max_train_examples, int) or self.max_train_examples < 1):
            raise ConfigError(f"max_train_examples must be a positive integer, got {self.max_train_examples!r}")
        for name in ("learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
        if self.bake and self.method != "mask":
            raise ConfigError("--bake exports a masked model: it needs --method mask")


def base_name(model: str) -> str:
    """How an artifact names its base: an absolute path for a local directory (so it loads
    from anywhere), the name itself for an offline source or a hub name."""
    return model if is_offline_source(model) or not os.path.isdir(model) else os.path.abspath(model)


def check_out(out: str, overwrite: bool) -> None:
    check_output_dir(out)
    found = [name for name in OUTPUTS if os.path.exists(os.path.join(out, name))]
    if found and not overwrite:
        raise ArtifactError(f"{out} holds an earlier run ({', '.join(found)}): --overwrite replaces it, or choose another --out")


def remove_outputs(out: str) -> None:
    for name in OUTPUTS:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def load_base(model: str, tokenizer_name: str | None, max_length: int):
    lm, report = load_masked_lm_reporting(model)
    tokenizer = load_tokenizer(tokenizer_name or model)
    check_model_tokenizer(lm, tokenizer, max_length, model_name=model)
    return lm, report, tokenizer


def run_finetune(config: FinetuneRunConfig) -> dict:
    check_out(config.out, config.overwrite)  # before any model is loaded
    started = time.perf_counter()
    method = get_method(config.method)
    with library_progress_bars(config.progress):
        task = get_task(config.task, data_dir=config.data_dir, **config.task_options)
        lm, report, tokenizer = load_base(config.model, config.tokenizer, config.max_length)
        set_seed(config.seed)  # before the new head is initialised: the seed decides it
        task_model = build_task_model(lm, task)
        del lm
        new_head = sorted(set(report.new_parameters) & set(task_model.head))
        if task_model.kind == "cloze" and new_head and config.method == "mask" and not config.mask.train_head:
            raise ConfigError(f"model {config.model!r} has no trained MLM head ({new_head[0]} ... are new) and the "
                              f"method trains none: the cloze answers would come from a random head")
        groups = method.prepare(task_model, learning_rate=config.learning_rate, head_learning_rate=config.head_learning_rate,
                                mask=config.mask, seed=config.seed)
        loader = train_loader(task_model, tokenizer, task, max_length=config.max_length, batch_size=config.batch_size,
                              max_train_examples=config.max_train_examples, seed=config.seed)
        with RunLock(config.out):
            if config.overwrite:
                remove_outputs(config.out)
            train_started = time.perf_counter()
            losses = train_task_model(task_model, groups, loader, epochs=config.epochs, progress=config.progress,
                                      description=f"{config.method} {task.name}")
            train_seconds = time.perf_counter() - train_started
            metrics = evaluate_task_model(task_model, tokenizer, task, max_length=config.max_length)
            facts = {"name": task.name, "kind": task.kind, "label_names": list(task.label_names),
                     "num_labels": num_labels_of(task) if task.kind == "classification" else None}
            artifact = os.path.join(config.out, "model" if config.method == "full" else "adapter")
            stored = method.save(task_model, artifact, tokenizer=tokenizer, base_model=base_name(config.model),
                                 task=facts, mask=config.mask)
            if config.bake:
                export_baked(task_model, tokenizer, os.path.join(config.out, "baked"))
            body = sum(p.numel() for n, p in task_model.model.named_parameters() if n not in set(task_model.head))
            results = {"config": {**asdict(config), "mask": asdict(config.mask)}, "task": facts, "method": config.method,
                       "metrics": metrics, "trainable_parameters": trainable_parameters(groups),
                       "body_parameters": body, "bytes_stored": stored, "bytes_stored_total": sum(stored.values()),
                       "new_parameters": report.new_parameters, "steps": len(losses), "losses": losses[:: max(1, len(losses) // 50)],
                       "train_seconds": train_seconds, "seconds_per_step": train_seconds / max(len(losses), 1),
                       "wall_seconds": time.perf_counter() - started, **method.describe(task_model)}
            write_json_atomic(os.path.join(config.out, "results.json"), results)
    return results


def export_baked(task_model: TaskModel, tokenizer, directory: str) -> None:
    """The masked model with ``W * m`` written as its weights: an ordinary model directory
    that plain ``from_pretrained`` loads without maskpolicy."""
    baked = baked_copy(task_model.model)

    def write(tmp: str) -> None:
        baked.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    save_directory_atomic(directory, write)
