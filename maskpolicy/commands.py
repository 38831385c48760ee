"""The subcommands behind ``maskpolicy`` (argument parsing lives in ``cli.py``)."""
from __future__ import annotations

import json
import os

from maskpolicy.policies.errors import ArtifactError, ConfigError
from maskpolicy.policies.paths import check_output_dir, check_output_file, read_text

def _merge(args, rename: dict | None = None) -> dict:
    """Options from ``--config`` overridden by the flags actually given."""
    from maskpolicy.train.config import load_config_file

    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    rename = rename or {}
    for key, value in vars(args).items():
        if key in ("command", "config") or value is None:
            continue
        if key in ("policy_option", "task_option"):
            data.setdefault(key + "s", {}).update(_parse_options(value, "--" + key.replace("_", "-")))
            continue
        data[rename.get(key, key)] = value
    return data


def _format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def _parse_options(items: list[str], flag: str = "--policy-option") -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _leave_process_group() -> None:
    """End a multi-process run's process group before the interpreter exits: a rank whose
    gloo threads are still alive at exit can abort ("terminate called without an active
    exception", seen once in a fresh-clone test run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def pretrain(args) -> int:
    from maskpolicy.train.config import PretrainConfig
    from maskpolicy.train.pretrain import pretrain as run

    data = _merge(args)
    for key in ("rate", "fill"):
        if key in data:
            data.setdefault("masking", {})[key] = data.pop(key)
    config = PretrainConfig.from_dict(data)
    results = run(config)  # checks --out before any work (train/run_dir.check_run_dir)
    _leave_process_group()
    if "process_index" in results:  # another rank of a multi-process run: the main process reports
        return 0
    print(f"{config.task} / {config.policy}: {_format_metrics(results.get('metrics', {})) or 'no evaluation'}")
    print(f"wrote {os.path.join(config.out, 'model')} and {os.path.join(config.out, 'results.json')}")
    return 0


def learn(args) -> int:
    from maskpolicy.meta.learn import LearnConfig, learn as run

    data = _merge(args)
    meta = data.setdefault("meta", {})
    for flag, key in (("backend", "backend"), ("meta_steps", "meta_steps")):
        if flag in data:
            meta[key] = data.pop(flag)
    for flag, key in (("inner_steps", "steps"), ("inner_lr", "lr")):
        if flag in data:
            meta.setdefault("inner", {})[key] = data.pop(flag)
    if "epochs" in data:
        data.setdefault("supervised", {})["epochs"] = data.pop("epochs")
    if "classifier" in data:
        data.setdefault("supervised", {}).setdefault("classifier", {})["model"] = data.pop("classifier")
    if isinstance(data.get("validate_fills"), str):
        data["validate_fills"] = [f.strip() for f in data["validate_fills"].split(",") if f.strip()]
    for flag, key in (("validate_steps", "steps"), ("validate_questions", "questions"), ("validate_enabled", "enabled"),
                      ("validate_fills", "fills")):
        if flag in data:
            data.setdefault("validate", {})[key] = data.pop(flag)
    config = LearnConfig.from_dict(data)
    check_output_dir(config.out)
    report = run(config)
    final = report.get("held_out") or report.get("metrics") or {}
    print(f"{report['task']} / {report['method']}: {_format_metrics(final)} ({report['seconds']:.0f} s)")
    print(_validation_lines(report.get("validation", {})))
    print(f"wrote policy {config.out}")
    return 0


MASK_OPTIONS = ("pattern", "tau", "initial_sparsity", "init_width", "score_learning_rate", "train_head")


def finetune(args) -> int:
    from maskpolicy.train.finetune_run import FinetuneRunConfig, run_finetune

    data = _merge(args)
    for key in MASK_OPTIONS:
        if key in data:
            data.setdefault("mask", {})[key] = data.pop(key)
    unknown = set(data) - set(FinetuneRunConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown finetune option(s): {', '.join(sorted(unknown))}")
    config = FinetuneRunConfig(**data)
    results = run_finetune(config)
    extra = f", masked {results['masked_share']['overall']:.2%} of {results['masked_share']['masked_weights']:,} weights" \
        if "masked_share" in results else ""
    print(f"{results['task']['name']} / {config.method}: {_format_metrics(results['metrics'])}; "
          f"{results['trainable_parameters']:,} trainable parameters, {results['bytes_stored_total']:,} bytes stored{extra}")
    print(f"wrote {os.path.join(config.out, 'results.json')}")
    return 0


def _validation_lines(validation: dict) -> str:
    """What the downstream validation measured, one candidate per line, the kept one marked."""
    if "candidates" not in validation:
        return f"validation: {validation.get('skipped', 'not run')}"
    base, cfg = validation["baseline"], validation["config"]
    lines = [f"validation ({cfg['steps']} pre-training steps each from the same start, scored on the "
             f"{cfg['questions']} questions; {validation['baseline_policy']}: answer NLL {base['answer_nll']:.3f}, "
             f"cloze EM {base['cloze_em']:.3f}; {validation['seconds']:.0f} s):"]
    for row in validation["candidates"]:
        masks = row.get("masks") or {}
        shares = ", ".join(f"{name} {masks[key]:.2f}" for name, key in
                           (("answer tokens masked", "answer_masked"), ("subject tokens masked", "key_masked"))
                           if masks.get(key) is not None)
        kept = ("  <- kept" if row["candidate"] == validation["selected"]
                and row.get("fill") == validation.get("selected_fill") else "")
        fill = f", fill {row['fill']}" if "fill" in row else ""
        lines.append(f"  {row['candidate']}{fill}: answer NLL {row['answer_nll']:.3f} ({-row['nll_gain']:+.3f}), "
                     f"cloze EM {row['cloze_em']:.3f}{', ' + shares if shares else ''}{kept}")
    return "\n".join(lines)


def evaluate(args) -> int:
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.train.checkpoint import write_json_atomic
    from maskpolicy.train.config import FinetuneConfig
    from maskpolicy.train.evaluate import evaluate_task
    from maskpolicy.train.models import check_model_dir, load_masked_lm, load_tokenizer

    data = _merge(args)
    unknown = set(data) - {"model", "task", "task_options", "data_dir", "max_length", "seed", "out", "finetune",
                           "progress"}
    if unknown:
        raise ConfigError(f"unknown evaluate option(s): {', '.join(sorted(unknown))}")
    if not data.get("model"):
        raise ConfigError("evaluate needs --model DIR")
    model_dir = data["model"]
    if not os.path.isdir(model_dir):
        raise ArtifactError(f"model directory not found: {model_dir}")
    check_model_dir(model_dir)
    # Where the results go is checked before the model is loaded and evaluated.
    if data.get("out"):
        check_output_file(data["out"])
    else:
        check_output_dir(model_dir, "--out (default: a file in the --model directory)")
    # Defaults from the run that wrote the model: its task (with options), length, seed.
    run = _run_config(model_dir)
    same_task = data.get("task") in (None, run.get("task"))
    task_name = data.get("task") or run.get("task")
    if not task_name:
        raise ConfigError(f"evaluate needs --task (no run config in {model_dir})")
    task_options = data.get("task_options", run.get("task_options", {}) if same_task else {})
    seed = int(data.get("seed", run.get("seed", 0)))
    model = load_masked_lm(model_dir)
    tokenizer = load_tokenizer(model_dir)
    task = get_task(task_name, data_dir=data.get("data_dir", run.get("data_dir")), **task_options)
    finetune = FinetuneConfig(**data["finetune"]) if "finetune" in data else None
    metrics = evaluate_task(model, tokenizer, task, max_length=int(data.get("max_length", run.get("max_length", 64))),
                            finetune=finetune, seed=seed, progress=bool(data.get("progress", True)))
    safe = "".join(c if c.isalnum() else "_" for c in task.name)
    out = data.get("out") or os.path.join(model_dir, f"eval_{safe}.json")
    write_json_atomic(out, {"model": model_dir, "task": task.name, "metrics": metrics})
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out}")
    return 0


def _run_config(model_dir: str) -> dict:
    from maskpolicy.train.pretrain import RUN_CONFIG_FILE

    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    text = read_text(path, fix="run pretrain again or give --task", error=ArtifactError)
    try:
        config = json.loads(text).get("config", {})
    except (AttributeError, json.JSONDecodeError) as err:  # not JSON, or JSON but not an object
        raise ArtifactError(f"{path} is corrupt: {err}") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{path} is corrupt: its 'config' is not a mapping")
    return config


def _tokenizer_for(data: dict, task=None):
    """``--tokenizer``, else ``--model``'s, else a saved policy's, else built from the task
    (``task`` when the caller already loaded it)."""
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.tasks.tokenizer import tokenizer_for_task
    from maskpolicy.train.models import load_model_tokenizer, load_tokenizer

    if data.get("tokenizer"):
        return load_tokenizer(data["tokenizer"])
    if data.get("model"):
        return load_model_tokenizer(data["model"])
    policy = str(data.get("policy", ""))
    if os.path.isdir(policy) and os.path.isfile(os.path.join(policy, "tokenizer_config.json")):
        return load_tokenizer(policy)
    if task is None:
        task = get_task(data.get("task", "synthetic"), data_dir=data.get("data_dir"), **data.get("task_options", {}))
    return tokenizer_for_task(task, **({"vocab_size": int(data["vocab_size"])} if "vocab_size" in data else {}))


def show(args) -> int:
    from maskpolicy.policies import get_policy
    from maskpolicy.policies.display import policy_view, render_terminal, save_heatmap

    data = _merge(args)
    if data.get("passages") is not None:
        return _show_passages(data)
    if not data.get("policy") or not data.get("text"):
        raise ConfigError("show needs --policy P and --text TEXT (or --task T --passages N for corpus passages)")
    if data.get("png"):
        check_output_file(data["png"], "--png")
    tokenizer = _tokenizer_for(data)
    policy = get_policy(data["policy"], tokenizer, **data.get("policy_options", {}))
    view = policy_view(policy, tokenizer, data["text"], rate=float(data.get("rate", 0.15)),
                       seed=int(data.get("seed", 0)), deterministic=bool(data.get("deterministic", False)),
                       max_length=int(data.get("max_length", 512)), fill=data.get("fill"))
    print(render_terminal(view))
    if data.get("png"):
        print(f"wrote {save_heatmap(view, data['png'])}")
    return 0


def _show_passages(data: dict) -> int:
    """``show --task T --passages N``: the task's first N corpus passages as pre-training
    sees them (its tokenizer, max_length and gold ``span_ids``), each with its key and
    whether it has gold spans or the ``salient_span`` oracle falls back on it."""
    from maskpolicy.policies import get_policy
    from maskpolicy.policies.display import policy_view, render_terminal
    from maskpolicy.tasks.features import encode_passages
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.train.config import PretrainConfig
    from maskpolicy.train.data import GOLD_SPAN_FALLBACK, uses_gold_spans

    count = data["passages"]
    if data.get("text"):
        raise ConfigError("show: give --text TEXT or --passages N, not both")
    if not data.get("policy") or not data.get("task"):
        raise ConfigError("show --passages N needs --task T and --policy P")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"--passages must be a positive number, got {count!r}")
    if data.get("png"):
        raise ConfigError("--png draws one text: use it with --text")
    max_length = int(data.get("max_length", PretrainConfig.max_length))
    task = get_task(data["task"], data_dir=data.get("data_dir"), **data.get("task_options", {}))
    tokenizer = _tokenizer_for(data, task)
    policy = get_policy(data["policy"], tokenizer, **data.get("policy_options", {}))
    oracle = uses_gold_spans(policy)
    shown = task.corpus[:count]
    rows = encode_passages(tokenizer, shown, max_length=max_length, span_splits=("train", "eval"))
    print(f"task {task.name}: the first {len(shown)} of {len(task.corpus)} corpus passages as pre-training sees "
          f"them (max_length {max_length}, gold spans of the train and eval questions)")
    for i, (passage, word_ids, span_ids) in enumerate(zip(shown, rows["word_ids"], rows["span_ids"]), 1):
        used = [passage.spans[k] for k in sorted({k for k in span_ids if k >= 0})]
        if used:
            status = "gold spans " + ", ".join(f"{passage.text[s.start:s.end]!r} ({s.split})" for s in used)
        else:
            status = "no gold span" + (f": salient_span falls back to its {GOLD_SPAN_FALLBACK}" if oracle else "")
        print(f"\npassage {i}, key {passage.key!r}: {status}")
        view = policy_view(policy, tokenizer, passage.text, rate=float(data.get("rate", 0.15)),
                           seed=int(data.get("seed", 0)), deterministic=bool(data.get("deterministic", False)),
                           max_length=max_length, extras={"word_ids": word_ids, "span_ids": span_ids},
                           fill=data.get("fill"))
        print(render_terminal(view))
    return 0


def pmi(args) -> int:
    from maskpolicy.policies import get_policy
    from maskpolicy.policies.pmi_table import build_pmi_table
    from maskpolicy.tasks.features import encode_passages
    from maskpolicy.tasks.registry import get_task

    data = _merge(args)
    if not data.get("task") or not data.get("out"):
        raise ConfigError("pmi needs --task T and --out FILE")
    check_output_file(data["out"])
    task = get_task(data["task"], data_dir=data.get("data_dir"), **data.get("task_options", {}))
    tokenizer = _tokenizer_for({k: v for k, v in data.items() if k != "policy"})
    enc = encode_passages(tokenizer, task.corpus, max_length=int(data.get("max_length", 128)), span_splits=())
    options = {k: int(data[k]) for k in ("max_n", "min_count", "top_k") if k in data}
    vocab = get_policy("random", tokenizer).vocab
    table = build_pmi_table(list(enc["input_ids"]), list(enc["word_ids"]), vocab, **options)
    table.save(data["out"])
    print(f"{len(table.ngrams)} n-grams; wrote {data['out']}")
    return 0


def bench(args) -> int:
    from maskpolicy.benchmarks.suites import run_suite

    import inspect

    data = _merge(args)
    known = set(inspect.signature(run_suite).parameters)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"bench: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if isinstance(data.get("policies"), str):
        data["policies"] = [p.strip() for p in data["policies"].split(",") if p.strip()]
    result = run_suite(**data)
    print(result["table"])
    print(f"wrote {result['out']}")
    return 0
