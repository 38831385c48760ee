"""Judge learned policies by what they do downstream, not by answer recall; choose their fill.

Answer recall says whether a policy's budget covers the answers; it cannot see what the rest
of the budget hides (an entity's name masked with its attribute) nor how fast pre-training
then learns. ``validate_policies`` runs, for every candidate policy and for a baseline
(``random``), the same short intermediate pre-training from the same start (the meta-steps'
warmed language model, or the given checkpoint), with the same seed, data order and budget,
under each budget fill of ``fills`` (``sampler.FILL_MODES``: what fills the budget beyond the
tokens a policy selects), and scores each trained model on cloze questions:

- ``answer_nll``: mean cross-entropy of the answer tokens (the selection score, lower is
  better: smooth after a few hundred steps, when exact match is still near 0 for every policy);
- ``cloze_em``: exact match on the same questions;
- the candidate's ``mask_profile`` (answer, key/subject and other tokens masked), on the
  evaluation entities' passages where the task marks them (a report beside the score).

The (candidate, fill) pair with the lowest ``answer_nll`` is selected: ``learn`` saves that
snapshot with that fill (``LearnedPolicy.fill``), which ``pretrain`` then uses unless told
otherwise. No fill is best on every task (on the dense world the gold-span oracle scored
0.85 with ``none`` and 0.57 with ``ranking``; on a world whose questions are phrased unlike
the corpus 0.22 with ``none`` and 0.70 with ``random``), so the choice is made per task.

The questions are the task's *training* questions by default (``questions: train``): the
learner may use them, and choosing among policies by the evaluation questions would bias the
evaluation score that is reported afterwards. ``questions: eval`` scores on those instead.

Cost: ``(candidates x fills + 1) x steps`` pre-training steps plus one cloze evaluation
each; with the defaults (2 candidates, 3 fills, 300 steps) 7 short runs.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

from maskpolicy.policies import MaskingConfig
from maskpolicy.policies.configs import config_from_dict
from maskpolicy.policies.errors import ConfigError
from maskpolicy.policies.sampler import FILL_MODES
from maskpolicy.tasks.base import Task

from .mask_profile import mask_profile


@dataclass
class ValidateConfig:
    steps: int = 300  # short intermediate pre-training per candidate (and the baseline)
    candidates: int = 2  # meta: policy snapshots validated, evenly spaced over the meta-steps, the last included
    questions: str = "train"  # train | eval: the questions that score the runs
    baseline: str = "random"  # the policy every candidate is compared with, from the same start
    batch_size: int = 32
    learning_rate: float = 1e-3
    fills: tuple[str, ...] = FILL_MODES  # the budget fills tried with every candidate; the best pair is kept
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "candidates", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"validate: {name} must be a positive int, got {value!r}")
        if self.questions not in ("train", "eval"):
            raise ConfigError(f"validate: questions must be train or eval, got {self.questions!r}")
        if isinstance(self.fills, str):
            self.fills = (self.fills,)
        self.fills = tuple(dict.fromkeys(self.fills))
        if not self.fills or any(f not in FILL_MODES for f in self.fills):
            raise ConfigError(f"validate: fills must be some of {', '.join(FILL_MODES)}, got {list(self.fills)!r}")
        if not isinstance(self.learning_rate, (int, float)) or self.learning_rate <= 0:
            raise ConfigError(f"validate: learning_rate must be > 0, got {self.learning_rate!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "ValidateConfig":
        return config_from_dict(cls, data, "validate")

    def to_dict(self) -> dict:
        return asdict(self)


def _short_run(policy: str, lm_dir: str, out: str, learn_config, config: ValidateConfig, masking: MaskingConfig,
               questions: list) -> dict:
    """One short intermediate pre-training from ``lm_dir`` with ``policy``; its cloze scores
    (a seq2seq run, ``learn_config.arch``: the cloze read as denoising, ``seq2seq_cloze_metrics``)."""
    from maskpolicy.train.config import PretrainConfig
    from maskpolicy.train.evaluate import cloze_metrics
    from maskpolicy.train.models import load_tokenizer
    from maskpolicy.train.objectives import load_trained
    from maskpolicy.train.pretrain import pretrain
    from maskpolicy.train.seq2seq_evaluate import seq2seq_cloze_metrics

    started = time.perf_counter()
    arch = learn_config.arch
    output = learn_config.output if arch == "seq2seq" else None
    pretrain(PretrainConfig(task=learn_config.task, task_options=learn_config.task_options,
                            data_dir=learn_config.data_dir, policy=policy, model=lm_dir, out=out,
                            steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                            max_length=learn_config.max_length, seed=learn_config.seed, masking=masking,
                            arch=arch, output=output,
                            eval_every=0, save_every=0, evaluate=False, progress=False, overwrite=True))
    model, tokenizer = load_trained(arch, os.path.join(out, "model")), load_tokenizer(lm_dir)
    if arch == "seq2seq":
        scores = seq2seq_cloze_metrics(model, tokenizer, questions, output=output, max_length=learn_config.max_length)
    else:
        scores = cloze_metrics(model, tokenizer, questions, learn_config.max_length)
    return {k: round(v, 5) for k, v in scores.items()} | {"seconds": round(time.perf_counter() - started, 1)}


def validate_policies(candidates: list[tuple[str, object]], lm_dir: str, tokenizer, task: Task, learn_config,
                      config: ValidateConfig, masking: MaskingConfig) -> dict:
    """Score each ``(label, policy)`` under each fill of ``config.fills``, and the baseline, by
    short pre-training from ``lm_dir``.

    Returns ``{"candidates": [...], "baseline": {...}, "selected": label, "selected_fill": fill,
    ...}``; every candidate row holds its label, fill, ``answer_nll``, ``cloze_em``, the gain over
    the baseline and its mask profile. The selected pair has the lowest ``answer_nll``."""
    if task.kind != "cloze":
        raise ConfigError(f"validation scores cloze questions; task {task.name} is {task.kind}")
    questions = task.train if config.questions == "train" else task.eval
    if not questions:
        raise ConfigError(f"validate: task {task.name} has no {config.questions} questions")
    # What the masks cover is read on the evaluation entities' passages when the task marks
    # them (the held-out side, as the learners' recall is): a report, not part of the choice.
    profile_split = "eval" if any(sp.split == "eval" for p in task.corpus for sp in p.spans) else "train"
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="maskpolicy-validate-")
    rows = []
    try:
        baseline = _short_run(config.baseline, lm_dir, os.path.join(tmp, "baseline"), learn_config, config, masking,
                              questions)
        for i, (label, policy) in enumerate(candidates):
            policy_dir = os.path.join(tmp, f"policy-{i}")
            policy.save_pretrained(policy_dir, tokenizer=tokenizer)
            for j, fill in enumerate(config.fills):
                filled = MaskingConfig.from_dict({**masking.to_dict(), "fill": fill})
                row = {"candidate": label, "fill": fill,
                       **_short_run(policy_dir, lm_dir, os.path.join(tmp, f"run-{i}-{j}"), learn_config, config,
                                    filled, questions)}
                row["nll_gain"] = round(baseline["answer_nll"] - row["answer_nll"], 5)
                row["em_gain"] = round(row["cloze_em"] - baseline["cloze_em"], 5)
                row["masks"] = mask_profile(policy, tokenizer, task, filled, split=profile_split,
                                            max_length=learn_config.max_length, seed=learn_config.seed)
                rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = min(rows, key=lambda r: (r["answer_nll"], -r["cloze_em"]))
    return {"config": config.to_dict(), "masking": masking.to_dict(), "baseline_policy": config.baseline,
            "baseline": baseline, "candidates": rows, "selected": best["candidate"], "selected_fill": best["fill"],
            "seconds": round(time.perf_counter() - started, 1)}
