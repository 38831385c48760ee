"""The synthetic suite's harder world, and the budget-filling comparison.

The *dense* world is the built-in world with its harder options (``tasks/synthetic.py``):
three facts per passage about one entity, the entity named in every sentence, two-word
answers, questions without the corpus's fillers. There a policy that ranks the answers first
can still teach nothing: whatever fills the rest of the budget (the entity's own name, if the
policy's tail lands there) hides the association the questions ask about. This section runs

- the grid ``none / random / salient_span (gold spans) / learned-supervised / learned-meta``
  on it over the suite's seeds, at the default ``fill``, and each row's paired difference to
  ``random`` (``paired.py``);
- what the masks cover (``meta.mask_profile``): answer, subject (the passage's key) and other
  tokens masked, per policy, beside the learned policies' answer recall;
- the fill comparison: ``salient_span``, ``learned-supervised`` and ``learned-meta`` under
  every ``MaskingConfig.fill`` mode on the dense world and on the built-in world (first seed),
  the measurement the default fill was chosen by. The learned policies are shared with the
  grids above (``GridSpec.policy_root``): only how their probabilities become masks differs.
"""
from __future__ import annotations

import os

from maskpolicy.policies import MaskingConfig
from maskpolicy.policies.sampler import FILL_MODES

from .grid import GridSpec, grid_rows, run_grid
from .paired import EXPLAIN_AGAIN, HEADING, compare_to_random
from .tables import fmt, markdown_table

DENSE = {"facts_per_passage": 3, "answer_words": 2, "relations": ["birthplace", "profession", "employer"]}
DENSE_POLICIES = ["none", "random", "salient_span", "learned-supervised", "learned-meta"]
FILL_POLICIES = ["salient_span", "learned-supervised", "learned-meta"]


def run_dense(out: str, *, tasks: list[str], seeds: list[int], steps: int, learn_options: dict, workers: int,
              builtin_root: str, builtin_pretrain: dict, compare_fills: bool = True) -> dict:
    """Run (or read back) the dense grid and the fill comparison; returns sections and records.
    ``builtin_root``/``builtin_pretrain``: the built-in world's grid (its default-fill cells and
    learned policies are reused by the comparison)."""
    default = MaskingConfig().fill
    root = os.path.join(out, "dense")
    dense_options = {**builtin_pretrain.get("task_options", {}), **DENSE}  # the suite's world size, made dense
    dense_pretrain = {**builtin_pretrain, "task_options": dense_options}
    dense_learn = {**learn_options, "task_options": {**learn_options.get("task_options", {}), **DENSE}}
    spec = GridSpec(tasks=tasks, policies=DENSE_POLICIES, seeds=seeds, steps=steps,
                    pretrain_options=dense_pretrain, learn_options=dense_learn, workers=workers)
    grid = run_grid(spec, root)
    fills = {("dense", default): grid}
    for world, world_root, pretrain, learn in (("dense", root, dense_pretrain, dense_learn),
                                               ("built-in", builtin_root, builtin_pretrain, learn_options)):
        for fill in FILL_MODES if compare_fills else ():
            if (world, fill) in fills:
                continue
            fill_spec = GridSpec(tasks=tasks, policies=FILL_POLICIES, seeds=seeds[:1], steps=steps,
                                 pretrain_options={**pretrain, "masking": {**pretrain.get("masking", {}), "fill": fill}},
                                 learn_options=learn, workers=workers, policy_root=world_root)
            fill_root = world_root if fill == default else os.path.join(world_root, f"fill-{fill}")
            fills[(world, fill)] = run_grid(fill_spec, fill_root)
    paired = compare_to_random(grid, spec.tasks, spec.policies)
    sections = [
        (f"Dense world ({describe()}): cloze EM on evaluation entities, mean ± std over seeds, fill `{default}`",
         markdown_table(grid_rows(grid, spec), ["policy"] + spec.tasks)),
        *paired.section(f"Dense world: {HEADING[0].lower()}{HEADING[1:]}", EXPLAIN_AGAIN),
        ("Dense world: what the masks cover (evaluation entities' passages, 3 draws, first seed)",
         markdown_table(mask_rows(grid, spec, dense_options), MASK_HEADER)),
    ]
    if compare_fills:
        sections.append((f"Budget filling: cloze EM by fill mode (seed {seeds[0]}, {steps} steps; default `{default}`)",
                         markdown_table(fill_rows(fills, tasks, seeds[0]), ["world", "policy"] + list(FILL_MODES))))
    return {"sections": sections, "grid": grid, "spec": spec, "paired": paired.records(),
            "fills": {f"{w} {f}": g["cells"] for (w, f), g in fills.items() if (w, f) != ("dense", default)}}


def describe() -> str:
    return (f"{DENSE['facts_per_passage']} facts per passage about one entity named in every sentence, "
            f"{DENSE['answer_words']}-word answers, relations {', '.join(DENSE['relations'])}")


MASK_HEADER = ["policy", "answer tokens masked", "answers masked whole", "subject tokens masked",
               "subject tokens masked where the answer is", "other tokens masked", "masks per passage",
               "answer recall (learned)"]
_PROFILE_KEYS = ("answer_masked", "answer_whole", "key_masked", "key_masked_with_answer", "other_masked",
                 "masks_per_row")


def mask_rows(grid: dict, spec: GridSpec, task_options: dict) -> list[dict]:
    """``mask_profile`` of each row's policy (learned rows: mean over the seeds' policies)."""
    from maskpolicy.meta.mask_profile import mask_profile
    from maskpolicy.policies import get_policy
    from maskpolicy.tasks.registry import get_task
    from maskpolicy.train.models import load_tokenizer

    done = [c for c in grid["cells"] if c["status"] == "done" and c["policy"] != "none"]
    if not done:
        return []
    tokenizer = load_tokenizer(os.path.join(done[0]["out"], "model"))
    task = get_task(spec.tasks[0], data_dir=spec.pretrain_options.get("data_dir"), **task_options)
    rows = []
    for policy in [p for p in spec.policies if p != "none"]:
        cells = [c for c in done if c["policy"] == policy and c["task"] == spec.tasks[0]]
        if not cells:
            continue
        sources = sorted({c["config"]["policy"] for c in cells}) if policy.startswith("learned") else [policy]
        profiles = [mask_profile(get_policy(source, tokenizer), tokenizer, task, MaskingConfig(),
                                 max_length=spec.pretrain_options.get("max_length", 64)) for source in sources]
        row = {"policy": policy}
        for name, key in zip(MASK_HEADER[1:-1], _PROFILE_KEYS):
            values = [p[key] for p in profiles if p.get(key) is not None]
            row[name] = fmt(values, 2) if values else "-"  # no subject in the passages, or no answer masked whole
        recalls = [cell["held_out"].get("recall") for key, cell in grid["learned"].get(
            {"learned-supervised": "supervised", "learned-meta": "meta"}.get(policy, ""), {}).items()
            if cell.get("held_out")]
        row[MASK_HEADER[-1]] = fmt([r for r in recalls if r is not None], 3) if recalls else "-"
        rows.append(row)
    return rows


def fill_rows(fills: dict, tasks: list[str], seed: int) -> list[dict]:
    rows = []
    for world in ("dense", "built-in"):
        for policy in FILL_POLICIES:
            row = {"world": world, "policy": policy}
            for fill in FILL_MODES:
                grid = fills.get((world, fill))
                values = [c["score"] for c in grid["cells"] if c["policy"] == policy and c["seed"] == seed
                          and c["task"] == tasks[0] and c["status"] == "done"] if grid else []
                row[fill] = f"{values[0]:.3f}" if values else "failed"
            rows.append(row)
    return rows


