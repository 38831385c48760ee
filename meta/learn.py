"""``maskpolicy learn``: learn a policy network for a task and save it as an artifact.

    method "supervised": token labels (answer spans of a QA task, or selective-masking
                         importance for a classification task) -> weighted BCE -> policy;
    method "meta":       bilevel meta-gradients from the downstream loss alone (bilevel.py),
                         on a language model that is general-pre-trained briefly first when
                         ``model`` is a size preset.

The result is a ``LearnedPolicy`` directory (config JSON + safetensors + tokenizer, the
report in its metadata) usable anywhere a policy name is: ``--policy DIR``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field

from maskpolicy.policies import LearnedPolicy
from maskpolicy.policies.configs import config_from_dict
from maskpolicy.policies.errors import ConfigError
from maskpolicy.tasks.registry import get_task
from maskpolicy.tasks.tokenizer import tokenizer_for_task

from .bilevel import MetaConfig, meta_learn
from .validate import ValidateConfig


LEARNER_POLICY_OPTIONS = {"token_dropout": 0.3}
"""The policy network options ``learn`` uses unless ``policy_options`` names them. Token
dropout 0.3 was chosen on the family's tuning worlds 0-7 (``selection_sweep``, supervised,
no validation): mean precision of the selected tokens 0.821 / 0.855 / 0.897 / 0.860 and
subject tokens selected 0.064 / 0.022 / 0.008 / 0.009 for 0 / 0.15 / 0.3 / 0.5, answer
recall 0.99 throughout. Without it, names never seen in training (the evaluation subjects)
were selected as answers in up to 23% of their occurrences."""


@dataclass
class LearnConfig:
    task: str = "synthetic:birthplace"
    method: str = "meta"  # supervised | meta
    out: str = "runs/policy"
    seed: int = 0
    data_dir: str | None = None
    task_options: dict = field(default_factory=dict)
    policy_options: dict = field(default_factory=dict)  # LearnedPolicy options (embedding_dim, encoder, ...),
    #   over LEARNER_POLICY_OPTIONS
    model: str = "tiny"  # meta: LM preset (general-pre-trained for lm_warmup_steps) or a checkpoint dir
    arch: str = "mlm"  # the LM meta-steps differentiate through (and validation pre-trains): mlm (BERT) |
    #   seq2seq (BART preset or an encoder-decoder checkpoint; inner steps are denoising steps)
    output: str = "spans"  # seq2seq: the decoder target, "spans" or "full"
    lm_warmup_steps: int = 50
    # Why so brief: the hypergradient ranks answer tokens best while the LM is still learning
    # the corpus. AUC of -g for answer tokens among explored candidates (harbour world, 10
    # batches): 0.99 after 50 random-MLM steps, 0.64 after 300, 0.56 after 1,000 (birthplace:
    # 1.00, -, 0.74). Co-training the LM (co_train="mlm") ages it the same way during
    # meta-learning, so the default keeps it as warmed up (co_train="none").
    tokenizer: str | None = None  # dir/hub name/WordPiece vocab; default: the checkpoint ``model``'s, else built from the task
    vocab_size: int = 8000
    max_length: int = 64
    temperature: float = 0.25  # saved with the policy: sigmoid(logits / T) sharpens what the sampler draws
    meta: MetaConfig = field(default_factory=dict)  # a dict is completed with this config's seed, max_length
    validate: ValidateConfig = field(default_factory=dict)  # downstream validation of the candidates (validate.py)
    supervised: dict = field(default_factory=dict)  # SupervisedConfig options
    # Also save every validated candidate (before its fill is chosen) under out/candidates/
    # <n>-<label>, with its validation rows in the metadata: for studies of the validation
    # itself (the family suite runs each one for the full length and ranks them).
    keep_candidates: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.policy_options, dict):
            self.policy_options = {**LEARNER_POLICY_OPTIONS, **self.policy_options}
        if self.method not in ("supervised", "meta"):
            raise ConfigError(f"method must be 'supervised' or 'meta', got {self.method!r}")
        if self.arch not in ("mlm", "seq2seq"):
            raise ConfigError(f"arch must be 'mlm' or 'seq2seq', got {self.arch!r}")
        if self.output not in ("spans", "full"):
            raise ConfigError(f"unknown output format {self.output!r}; choose 'spans' or 'full'")
        if isinstance(self.meta, dict):
            self.meta = MetaConfig(**{"seed": self.seed, "max_length": self.max_length, "output": self.output,
                                      **self.meta})
        if isinstance(self.validate, dict):
            self.validate = ValidateConfig.from_dict(self.validate)
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature!r}")
        if self.lm_warmup_steps < 0:
            raise ConfigError("lm_warmup_steps must be >= 0")

    @classmethod
    def from_dict(cls, data: dict) -> "LearnConfig":
        return config_from_dict(cls, data, "learn")

    def to_dict(self) -> dict:
        return asdict(self)


def warm_language_model(config: LearnConfig, tokenizer, workdir: str) -> str:
    """The directory of the LM the meta-steps differentiate through (and validation runs start
    from): the checkpoint ``model``, or a preset general-pre-trained briefly (random masking)
    on the task corpus, written under ``workdir``, so that it reads the language."""
    from maskpolicy.train.config import PretrainConfig
    from maskpolicy.train.objectives import is_arch_preset
    from maskpolicy.train.pretrain import pretrain

    if not is_arch_preset(config.arch, config.model):
        return config.model
    tok_dir = os.path.join(workdir, "tokenizer")
    tokenizer.save_pretrained(tok_dir)
    seq2seq = config.arch == "seq2seq"
    no_dropout = ({"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0} if seq2seq
                  else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    if config.progress:
        print(f"LM warm-up: {max(config.lm_warmup_steps, 1)} steps of random-masking "
              f"{'seq2seq denoising' if seq2seq else 'MLM'} on the task corpus "
              "(the language model that meta-steps differentiate through and validation runs start from; "
              "not the policy)")
    pretrain(PretrainConfig(task=config.task, task_options=config.task_options, data_dir=config.data_dir,
                            policy="random", model=config.model, tokenizer=tok_dir, out=os.path.join(workdir, "run"),
                            steps=max(config.lm_warmup_steps, 1), max_length=config.max_length, seed=config.seed,
                            arch=config.arch, output=config.output if seq2seq else None,
                            eval_every=0, save_every=0, evaluate=False, progress=config.progress,
                            model_options=no_dropout, overwrite=True))
    return os.path.join(workdir, "run", "model")


def learn_tokenizer(config: LearnConfig, task):
    """The policy's tokenizer: it must be the tokenizer of the models the policy will drive
    (a policy refuses any other), so a checkpoint's own comes before one built from the task."""
    from maskpolicy.train.models import load_model_tokenizer, load_tokenizer
    from maskpolicy.train.objectives import is_arch_preset

    if config.tokenizer:
        return load_tokenizer(config.tokenizer)
    if not is_arch_preset(config.arch, config.model):
        return load_model_tokenizer(config.model)
    return tokenizer_for_task(task, vocab_size=config.vocab_size)


def refuse_several_processes() -> None:
    """Learning a policy runs in one process. Spread over ranks, each would learn its own
    policy from its own batches and write the same --out; doing it right (each rank's
    hypergradient on its own batch, the policy's gradients all-reduced) needs the meta-step
    outside DDP (double backward does not pass through it, and higher does not support it)
    and is not built. A multi-process launch is refused before any work."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        raise ConfigError(f"learn runs in one process, but was started as {world} (torchrun / accelerate "
                          "launch): run `maskpolicy learn` directly; `pretrain` is the command that runs on several")


def learn(config: LearnConfig) -> dict:
    from maskpolicy.policies import MaskingConfig
    from maskpolicy.train.objectives import load_trained

    from .metrics import answer_recall, token_prf
    from .validate import validate_policies

    refuse_several_processes()
    started = time.perf_counter()
    task = get_task(config.task, data_dir=config.data_dir, **config.task_options)
    tokenizer = learn_tokenizer(config, task)
    validating = config.validate.enabled and task.kind == "cloze"
    workdir = tempfile.mkdtemp(prefix="maskpolicy-learn-")
    try:
        if config.method == "supervised":
            from .supervised import SupervisedConfig, learn_supervised

            sup = SupervisedConfig(**{"seed": config.seed, "max_length": config.max_length, **config.supervised})
            policy, report = learn_supervised(task, tokenizer, config.policy_options, sup, progress=config.progress)
            candidates, rate = [("final", policy)], sup.rate
        else:
            import torch

            torch.manual_seed(config.seed)
            lm_dir = warm_language_model(config, tokenizer, workdir)
            lm = load_trained(config.arch, lm_dir)
            policy = LearnedPolicy(tokenizer, **config.policy_options)

            def on_eval(p):
                return {"answer_recall": answer_recall(p, tokenizer, task, split="eval", rate=config.meta.rate,
                                                       max_length=config.max_length)} if task.has_spans else {}

            steps, n = config.meta.meta_steps, config.validate.candidates if validating else 1
            at = {round(steps * i / n) for i in range(1, n)} - {0, steps}
            start = time.perf_counter()
            report = meta_learn(policy, lm, task, tokenizer, config.meta, progress=config.progress, on_eval=on_eval,
                                snapshot_at=at)
            report["meta_seconds"] = round(time.perf_counter() - start, 2)
            candidates = []
            for step, state in sorted(report.pop("snapshots").items()):
                snapshot = LearnedPolicy(tokenizer, **config.policy_options)
                snapshot.load_state_dict(state)
                candidates.append((f"meta-step {step}", snapshot.eval()))
            candidates.append((f"meta-step {steps}", policy))
            rate = config.meta.rate
        for _, candidate in candidates:
            candidate.temperature = config.temperature  # after learning: training works on the logits
        if validating:
            if config.method == "supervised":
                lm_dir = warm_language_model(config, tokenizer, workdir)
            report["validation"] = validate_policies(candidates, lm_dir, tokenizer, task, config, config.validate,
                                                     MaskingConfig(rate=rate))
            policy = dict(candidates)[report["validation"]["selected"]]
            policy.fill = report["validation"]["selected_fill"]  # saved with it; pretrain uses it by default
        else:
            report["validation"] = {"skipped": f"validation scores cloze questions; {task.name} is {task.kind}"
                                    if config.validate.enabled else "off (validate.enabled: false)"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if config.method == "meta" and task.has_spans:
        from .labels import answer_span_labels

        held_out = answer_span_labels(task, tokenizer, max_length=config.max_length, split="eval")
        report["held_out"] = token_prf(policy, held_out, rate=config.meta.rate)
    report["seconds"] = round(time.perf_counter() - started, 2)
    report["task"], report["method"] = task.name, config.method
    policy.save_pretrained(config.out, tokenizer=tokenizer,
                           metadata={"learn_config": config.to_dict(), "report": _jsonable(report)})
    if config.keep_candidates:
        save_candidates(candidates, report, tokenizer, config.out)
    return report


def save_candidates(candidates: list, report: dict, tokenizer, out: str) -> None:
    """Each candidate to ``out/candidates/<n>-<label>`` with fill None and its validation rows."""
    rows = (report.get("validation") or {}).get("candidates", [])
    for n, (label, candidate) in enumerate(candidates):
        chosen = candidate.fill
        candidate.fill = None
        try:
            candidate.save_pretrained(os.path.join(out, "candidates", f"{n}-{label.replace(' ', '-')}"),
                                      tokenizer=tokenizer, metadata={"candidate": label, "validation": _jsonable(
                                          [r for r in rows if r["candidate"] == label])})
        finally:
            candidate.fill = chosen


def _jsonable(value):
    import json

    return json.loads(json.dumps(value, default=str))
