"""Benchmark suites behind ``maskpolicy bench``: a name -> a runner.

- ``quickstart`` (below, the README's main job);
- ``synthetic`` (``synthetic_suite.py``): all relations, policy grid over seeds, compute
  curves, transfer matrix;
- ``real`` (``real_suite.py``): WikiText-2 general pre-training, MR / SST-2 task-guided
  intermediate pre-training and fine-tuning, SQuAD-subset answer cloze;
- ``perf`` (``perf_suite.py``): collator, policy-network, meta-step and pre-training speed;
- ``weightmask`` (``weightmask_suite.py``): weight masking against full fine-tuning and a
  trained head, bytes per task, serving memory, step time, interpolation;
- ``seq2seq`` (``seq2seq_section.py``): the synthetic suite's seq2seq section on its own:
  BART denoising with output ``spans`` and ``full`` per policy, closed-book QA by generation;
- ``family`` (``family_suite.py``): drawn worlds of the family, tuning and held-out, random /
  the oracle under every fill / the learned policies with the fill their validation chose.

``quickstart`` (the README's main job): intermediate pre-training of a ``tiny`` BERT on the
built-in synthetic world with each heuristic policy at equal compute (same steps, batch,
mask budget and seed), then closed-book cloze exact match on the *evaluation* entities.
Finished cells are read back from their ``results.json`` instead of being re-run.
"""
from __future__ import annotations

import os
import time

from maskpolicy.policies.errors import ConfigError
from maskpolicy.policies.paths import check_output_dir
from maskpolicy.train.checkpoint import write_json_atomic
from maskpolicy.train.config import PretrainConfig

from .cells import pretrain_cell
from .tables import markdown_table, write_text

SUITES = ("quickstart", "synthetic", "real", "perf", "weightmask", "seq2seq", "family")

QUICKSTART = {
    "quickstart": dict(
        task="synthetic:birthplace",
        policies=["random", "whole_word", "span", "pmi", "salient_span"],
        steps=2000,
        quick_steps=1000,
    ),
}


PRESETS = {"quickstart": ("full", "quick"), "synthetic": ("full", "quick", "gpu"), "real": ("full", "quick", "gpu", "pretrained", "pretrained-quick"),
           "perf": ("full", "quick"), "weightmask": ("full", "quick"), "seq2seq": ("full", "quick", "gpu"),
           "family": ("full", "quick")}


def run_suite(suite: str = "quickstart", *, out: str | None = None, quick: bool = False, preset: str | None = None,
              seeds: int | None = None, transfer_seeds: int | None = None,
              steps: int | None = None, workers: int | None = None, policies: list[str] | None = None,
              task: str | None = None, seed: int | None = None, data_dir: str | None = None,
              seq2seq: bool = True, progress: bool = True) -> dict:
    """Run a suite by name; options a suite does not take are refused with a clear error."""
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    out = out or os.path.join("runs", suite)
    check_output_dir(out)  # before the first cell trains, not when the table is written
    if quick and preset not in (None, "quick", "pretrained"):
        raise ConfigError(f"--quick and --preset {preset}: choose one")
    if quick and preset == "pretrained":
        preset = "pretrained-quick"  # the pretrained preset's own small form
    preset = preset or ("quick" if quick else "full")
    if preset not in PRESETS[suite]:
        raise ConfigError(f"suite {suite!r} has no preset {preset!r}; presets: {', '.join(PRESETS[suite])}")
    quick = preset in ("quick", "pretrained-quick")
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if transfer_seeds is not None and suite not in ("synthetic", "real"):
        raise ConfigError(f"--transfer-seeds: suite {suite!r} has no transfer matrix (synthetic, real)")
    if not seq2seq and suite not in ("synthetic", "real"):
        raise ConfigError(f"--no-seq2seq: suite {suite!r} has no seq2seq section (synthetic, real)")
    if suite == "quickstart":
        if seeds not in (None, 1):
            raise ConfigError("the quickstart suite runs one seed (--seed K); use --suite synthetic for several")
        return run_quickstart(policies=policies, task=task, steps=steps, seed=seed or 0, quick=quick, out=out,
                              progress=progress)
    given = [name for name, value in (("--policies", policies), ("--task", task), ("--seed", seed)) if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only for the quickstart suite; suite {suite!r} has fixed "
                          "sizes (--quick, --seeds N, --steps N)")
    if suite == "real":
        from .real_suite import run_real

        return run_real(out, preset=preset, seeds=seeds, steps=steps, workers=workers or 2, data_dir=data_dir,
                        transfer_seeds=transfer_seeds, seq2seq=seq2seq)
    if suite == "weightmask":
        if steps is not None:
            raise ConfigError("--steps: the weightmask suite trains by epochs (--quick for the small preset)")
        from .weightmask_suite import run_weightmask

        return run_weightmask(out, preset=preset, seeds=seeds, workers=workers or 2, data_dir=data_dir)
    if suite == "perf":
        if seeds is not None or steps is not None:
            raise ConfigError("--seeds/--steps: the perf suite has fixed sizes (--quick for the small ones)")
        from .perf_suite import run_perf

        return run_perf(out, quick=quick, data_dir=data_dir)
    if data_dir is not None:
        raise ConfigError(f"--data-dir: suite {suite!r} uses no data files")
    if suite == "family":
        if seeds is not None:
            raise ConfigError("--seeds: the family suite runs seed 0 on every world and its preset's seeds on the "
                              "hardest held-out worlds")
        from .family_suite import run_family

        return run_family(out, preset=preset, steps=steps, workers=workers or 2)
    if suite == "seq2seq":
        from .seq2seq_section import run_seq2seq_suite

        return run_seq2seq_suite(out, preset=preset, seeds=seeds, steps=steps, workers=workers or 2)
    from .synthetic_suite import run_synthetic

    return run_synthetic(out, preset=preset, seeds=seeds, steps=steps, workers=workers or 2,
                         transfer_seeds=transfer_seeds, seq2seq=seq2seq)


def run_quickstart(*, policies: list[str] | None = None, task: str | None = None,
                   steps: int | None = None, seed: int = 0, quick: bool = False, out: str | None = None,
                   progress: bool = True) -> dict:
    suite = "quickstart"
    spec = QUICKSTART[suite]
    given = dict(policies=",".join(policies) if policies else None, task=task, steps=steps, seed=seed or None)
    task = task or spec["task"]
    policies = policies or spec["policies"]
    steps = steps or (spec["quick_steps"] if quick else spec["steps"])
    rows, failures, started = [], [], time.perf_counter()
    for policy in policies:
        config = PretrainConfig(task=task, policy=policy, steps=steps, seed=seed, out=os.path.join(out, policy),
                                eval_every=max(steps // 4, 1), save_every=steps, progress=progress)
        result = pretrain_cell(config)
        if result["status"] != "done":  # recorded in the cell's failed.json; the table goes on
            failures.append({"cell": policy, "error": result["error"]})
            rows.append({"policy": policy, "cloze EM (eval entities)": "failed", "cloze EM (train entities)": "failed",
                         "train s": ""})
            continue
        m = result["metrics"]
        rows.append({
            "policy": policy,
            "cloze EM (eval entities)": f"{m['cloze_em']:.3f}",
            "cloze EM (train entities)": f"{m.get('cloze_em_train', float('nan')):.3f}",
            "train s": f"{result['train_seconds']:.0f}",
        })
    header = ["policy", "cloze EM (eval entities)", "cloze EM (train entities)", "train s"]
    from .report import bench_command, machine

    wall = round(time.perf_counter() - started, 1)
    command = bench_command("maskpolicy bench --suite quickstart", "quick" if quick else "full", out, **given)
    table = (f"# quickstart\n\n{task}, tiny BERT from scratch, {steps} intermediate steps, batch 32, mask rate 0.15, "
             f"seed {seed}\n\n" + markdown_table(rows, header))
    if failures:
        table += "\n\nfailed cells:\n" + "\n".join(f"- {f['cell']}: {f['error']}" for f in failures)
    table += f"\n\n`{command}`: {wall:.0f} s on {machine()}"
    write_text(out, "table.md", table + "\n")
    write_json_atomic(os.path.join(out, "results.json"), {
        "suite": suite, "command": command, "task": task, "steps": steps, "seed": seed, "rows": rows,
        "failures": failures, "wall_seconds": wall, "date": time.strftime("%Y-%m-%d"), "machine": machine()})
    return {"table": table, "rows": rows, "failures": failures, "out": out}
