"""Options of weight masking (Zhao et al. 2020), validated at the boundary."""
from __future__ import annotations

import re
from dataclasses import dataclass

from maskpolicy.policies.errors import ConfigError

# The linear layers masked by default: attention query / key / value / output and both
# feed-forward layers of every transformer layer, under the names of the common Hugging
# Face encoder and seq2seq families (BERT / RoBERTa / MiniLM / ELECTRA: ``layer.N.attention
# .self.query`` ...; DistilBERT: ``q_lin`` ... ``lin2``; BART / Marian: ``q_proj`` ... ``fc2``;
# T5: ``SelfAttention.q`` ... ``DenseReluDense.wo``). Heads (classifier, pooler, MLM head)
# never match: their names carry no layer index.
DEFAULT_PATTERN = (
    r"\.(layer|layers|block)\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense"
    r"|attention\.(q_lin|k_lin|v_lin|out_lin)|ffn\.(lin1|lin2)"
    r"|(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2"
    r"|layer\.\d+\.(SelfAttention|EncDecAttention)\.(q|k|v|o)|layer\.\d+\.DenseReluDense\.(wi|wi_0|wi_1|wo))$"
)


@dataclass
class WeightMaskConfig:
    """``pattern``: regular expression searched in each ``nn.Linear``'s qualified name
    (``model.named_modules()``); ``tau``: a weight is kept where its score exceeds it;
    ``initial_sparsity``: share of weights masked (score below ``tau``) at the start;
    ``init_width``: the scores start uniform on an interval of this width placed around
    ``tau`` so that ``initial_sparsity`` of it lies below; ``score_learning_rate``: Adam on
    the scores, no weight decay (decay would push every score under ``tau``). Adam moves
    every score by about the learning rate per step whatever its gradient's scale, so the
    ratio learning rate x steps / ``init_width`` decides how many weights flip: at 1e-4
    (a few hundred steps, width 0.02) minilm-l6 masked for MR matched full fine-tuning,
    at 1e-3 a third of the weights flipped and it predicted one class (README);
    ``train_head``: the task head (classifier, or the MLM head for cloze tasks) trains
    normally (at the run's ``head_learning_rate``)."""

    pattern: str = DEFAULT_PATTERN
    tau: float = 0.01
    initial_sparsity: float = 0.05
    init_width: float = 0.02
    score_learning_rate: float = 1e-4
    train_head: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ConfigError("the weight-mask pattern must be a non-empty regular expression")
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise ConfigError(f"the weight-mask pattern {self.pattern!r} is not a regular expression: {err}") from None
        for name in ("tau", "initial_sparsity", "init_width", "score_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(f"weight mask {name} must be a number, got {value!r}")
        if not 0 <= self.initial_sparsity < 1:
            raise ConfigError(f"weight mask initial_sparsity must be in [0, 1), got {self.initial_sparsity}")
        if not 0 < self.tau < 1:
            raise ConfigError(f"weight mask tau must be in (0, 1), got {self.tau}")
        if not 0 < self.init_width <= 1:
            raise ConfigError(f"weight mask init_width must be in (0, 1], got {self.init_width}")
        if not 0 < self.score_learning_rate <= 1:
            raise ConfigError(f"weight mask score_learning_rate must be in (0, 1], got {self.score_learning_rate}")
        if not isinstance(self.train_head, bool):
            raise ConfigError(f"weight mask train_head must be true or false, got {self.train_head!r}")
