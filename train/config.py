"""Run configurations as plain dataclasses, validated at the boundary.

A config comes from flags, from ``--config FILE`` (YAML or JSON) or both (flags win). Every
value is checked here, so a bad value fails with one clear line before any model is built.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from maskpolicy.policies import MaskingConfig
from maskpolicy.policies.configs import config_from_dict
from maskpolicy.policies.errors import ConfigError
from maskpolicy.policies.paths import read_text


FINETUNE_METHODS = ("full", "linear")  # head-only and weight masking: ``finetune_run`` (``--method``)


@dataclass
class FinetuneConfig:
    """Fine-tuning for classification tasks (evaluation by accuracy)."""

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    max_train_examples: int | None = None  # cap for quick runs
    # "full": every weight trains; "linear": a logistic regression on the frozen encoder's
    # mean-pooled features, fitted to convergence (``linear_probe.py``; epochs, batch_size
    # and learning_rate do not apply): no randomness, one forward pass over the examples
    # (the pretrained preset's downstream probes).
    method: str = "full"

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "learning_rate")
        if self.method not in FINETUNE_METHODS:
            raise ConfigError(f"fine-tuning method must be one of {', '.join(FINETUNE_METHODS)}, got {self.method!r}")


@dataclass
class QAConfig:
    """Closed-book QA by generation (seq2seq runs on cloze tasks; ``generation_qa.py``):
    fine-tuning on the training questions, then greedy and beam-search answers.

    The number of epochs is chosen on held-out training questions, because no fixed count
    serves every start: BART tiny pre-trained on the synthetic world's spans needed about 200
    updates to stop appending a second span (EM 0.38 -> 0.95), while on SQuAD the same
    longer schedule overwrote what pre-training stored (EM 0.10 -> 0.05)."""

    epochs: int = 30  # at most; the epoch with the best held-out exact match is kept
    batch_size: int = 16
    learning_rate: float = 5e-4
    dev_fraction: float = 0.2  # share of training questions held out to choose the epoch (0: keep the last)
    patience: int = 5  # stop after this many epochs without a better held-out exact match
    max_new_tokens: int = 16  # the generation limit: longer answers are counted and reported
    num_beams: int = 4
    max_train_examples: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_new_tokens", "num_beams", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"qa {name} must be a positive integer, got {value!r}")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"qa learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if isinstance(self.dev_fraction, bool) or not 0 <= self.dev_fraction < 1:
            raise ConfigError(f"qa dev_fraction must be in [0, 1), got {self.dev_fraction!r}")


@dataclass
class PretrainConfig:
    task: str = "synthetic:birthplace"
    policy: str = "random"
    policy_options: dict = field(default_factory=dict)
    model: str = "tiny"  # size preset (tiny, mini, base) or a masked-LM checkpoint (dir or hub name)
    # mlm: a masked LM (BERT-style); seq2seq: an encoder-decoder (BART presets tiny / mini, or
    # a BART / T5 checkpoint) trained to denoise span-corrupted text (train/objectives.py)
    arch: str = "mlm"
    output: str | None = None  # seq2seq: the decoder target, "spans" (default) or "full"
    model_options: dict = field(default_factory=dict)  # BertConfig overrides for a preset (e.g. hidden_dropout_prob)
    # A checkpoint without an MLM head (an encoder): steps that train only the new head,
    # body frozen, before pre-training (None: train/head_warmup.DEFAULT_STEPS when anything
    # is new, 0 when the checkpoint has its head), at this learning rate.
    head_warmup_steps: int | None = None
    head_warmup_lr: float = 1e-2  # chosen by the measurement in train/head_warmup.py
    tokenizer: str | None = None  # dir/hub name or a WordPiece vocab file; default: the model's, else built from the task
    vocab_size: int = 8000  # for a tokenizer built from the task corpus
    out: str = "runs/pretrain"
    steps: int = 2000  # optimizer updates (0: only the head warm-up of a checkpoint without MLM head, and evaluation)
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = 64
    seed: int = 0
    eval_every: int = 500  # periodic evaluation (0 = only at the end, none when evaluate is off)
    save_every: int = 500  # checkpoint interval (0 = only at the end)
    keep_checkpoints: int = 2
    resume: bool = False
    overwrite: bool = False  # replace an earlier run in `out` (without it, and without resume, it is refused)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    data_dir: str | None = None
    task_options: dict = field(default_factory=dict)  # e.g. {"num_entities": 400, "seed": 1}: seed = data seed
    evaluate: bool = True  # evaluate on the downstream task after pre-training
    # Classification tasks: every probe_every steps (and at the end) fine-tune a classifier
    # from the current model with `probe` (default: `finetune`) and record its accuracy in
    # the history, a downstream compute curve (0 = off; costs one fine-tuning per probe).
    probe_every: int = 0
    probe: FinetuneConfig | None = None
    qa: QAConfig | None = None  # seq2seq on cloze tasks: QA by generation (None: QAConfig's defaults)
    progress: bool = True
    device: str = "auto"  # auto | cpu
    mixed_precision: str = "no"  # no | bf16 | fp16, passed to accelerate (bf16 works on CPU; fp16 needs a GPU)

    def __post_init__(self) -> None:
        if isinstance(self.masking, dict):
            self.masking = MaskingConfig.from_dict(self.masking)
        if isinstance(self.finetune, dict):
            self.finetune = config_from_dict(FinetuneConfig, self.finetune, "finetune")
        if isinstance(self.probe, dict):
            self.probe = config_from_dict(FinetuneConfig, self.probe, "probe")
        if isinstance(self.qa, dict):
            self.qa = config_from_dict(QAConfig, self.qa, "qa")
        if self.probe_every and self.eval_every and self.probe_every % self.eval_every:
            raise ConfigError(f"probe_every ({self.probe_every}) must be a multiple of eval_every ({self.eval_every}): "
                              "probes are recorded with the periodic evaluations")
        if self.probe is not None and not isinstance(self.probe, FinetuneConfig):
            raise ConfigError(f"probe must be a fine-tuning mapping (epochs, learning_rate, ...), got {self.probe!r}")
        _positive(self, "batch_size", "gradient_accumulation_steps", "learning_rate", "max_length", "head_warmup_lr")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            # 0: no pre-training step; the run evaluates (and warms up a new head) only.
            raise ConfigError(f"steps must be a whole number >= 0, got {self.steps!r}")
        if self.head_warmup_steps is not None and (isinstance(self.head_warmup_steps, bool) or
                                                   not isinstance(self.head_warmup_steps, int) or
                                                   self.head_warmup_steps < 0):
            raise ConfigError(f"head_warmup_steps must be a whole number >= 0, got {self.head_warmup_steps!r}")
        for name in ("eval_every", "save_every", "weight_decay", "probe_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.keep_checkpoints < 1:
            raise ConfigError("keep_checkpoints must be >= 1")
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.device not in ("auto", "cpu"):
            raise ConfigError(f"device must be 'auto' or 'cpu', got {self.device!r}")
        if self.arch not in ("mlm", "seq2seq"):
            raise ConfigError(f"arch must be 'mlm' or 'seq2seq', got {self.arch!r}")
        if self.output is not None and self.arch != "seq2seq":
            raise ConfigError("--output sets the decoder target of seq2seq pre-training: it needs --arch seq2seq")
        if self.output not in (None, "spans", "full"):
            raise ConfigError(f"unknown output format {self.output!r}; choose 'spans' (the masked spans) or 'full' "
                              f"(the whole sentence)")
        if self.arch == "seq2seq" and self.probe_every:
            raise ConfigError("probe_every: downstream probes fine-tune a classifier from a masked LM; "
                              "they are not available with --arch seq2seq")
        for name in ("policy_options", "task_options", "model_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PretrainConfig":
        return config_from_dict(cls, data, "pretrain")


def _positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}")


def load_config_file(path: str) -> dict:
    """Read a YAML or JSON config file into a dict (clear errors, no partial state)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    text = read_text(path, error=ConfigError)
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # json.JSONDecodeError / yaml.YAMLError
        raise ConfigError(f"cannot parse config file {path}: {str(err).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of options")
    return data
