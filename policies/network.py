"""``learned``: a small network that scores every token (one logit per token).

    policy = get_policy("learned", tokenizer)              # untrained: sigmoid(init_bias) everywhere
    probs = policy(input_ids, attention_mask, **extras)    # [B, T], differentiable
    policy.save_pretrained("runs/policy")                  # config + weights + tokenizer
    policy = get_policy("runs/policy", tokenizer)          # loaded via the directory loader

Token embeddings (+ learned positions for the transformer, + an optional projection of a
frozen language model's ``hidden_states``) go through a tiny encoder (pre-LN transformer or
bidirectional GRU) and a LayerNorm + linear head. Nothing here runs under ``no_grad``:
meta-learning backpropagates through ``forward`` into the policy's parameters.

The encoder only looks at real tokens (``attention_mask``), and positions count real tokens,
so a sentence gets the same logits whatever the padding (left or right) around it.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import artifacts
from .base import MaskingPolicy
from .errors import ConfigError
from .registry import register_directory_loader, register_policy
from .sampler import check_fill
from .vocab import VocabInfo

ENCODERS = ("transformer", "bigru")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"learned: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@register_policy("learned")
class LearnedPolicy(MaskingPolicy):
    """Per-token masking probabilities from a small trainable encoder."""

    def __init__(
        self,
        tokenizer=None,
        *,
        vocab: VocabInfo | None = None,
        embedding_dim: int = 64,
        num_layers: int = 1,
        num_heads: int = 2,
        encoder: str = "transformer",
        dropout: float = 0.0,
        token_dropout: float = 0.0,
        context_dim: int = 0,
        init_bias: float = -2.0,
        temperature: float = 1.0,
        max_length: int = 512,
        fill: str | None = None,
    ) -> None:
        super().__init__(tokenizer, vocab=vocab)
        # Options are stored under their own names so that ``config()`` can report them;
        # submodules therefore use other names (``body``, not ``encoder``; ``drop``, not ``dropout``).
        self.embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.num_heads = _check_int("num_heads", num_heads, 1)
        self.context_dim = _check_int("context_dim", context_dim, 0)
        self.max_length = _check_int("max_length", max_length, 1)
        if encoder not in ENCODERS:
            raise ConfigError(f"learned: encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        self.encoder = str(encoder)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"learned: dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        # Training only: each token's embedding is zeroed with this probability (its position
        # and context stay), so the network learns to score a token from its context as well as
        # from its identity. Names never seen in training (evaluation subjects, new text) keep
        # embeddings near their small initialisation, i.e. near zero: what a dropped token looks like.
        if isinstance(token_dropout, bool) or not isinstance(token_dropout, (int, float)) \
                or not 0.0 <= token_dropout < 1.0:
            raise ConfigError(f"learned: token_dropout must be in [0, 1), got {token_dropout!r}")
        self.token_dropout = float(token_dropout)
        if isinstance(init_bias, bool) or not isinstance(init_bias, (int, float)) or not math.isfinite(init_bias):
            raise ConfigError(f"learned: init_bias must be a finite number, got {init_bias!r}")
        self.init_bias = float(init_bias)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(f"learned: temperature must be a positive number, got {temperature!r}")
        # probs = sigmoid(logits / temperature): < 1 sharpens. The sampler draws in proportion
        # to probabilities, so a trained policy whose non-targets keep ~0.1 each would
        # otherwise spend much of the budget on them. Training uses ``logits`` directly.
        self.temperature = float(temperature)
        # The budget fill (sampler.FILL_MODES) validated for this policy's task by `learn`;
        # a Masker whose config names no fill uses it. None: the sampler's default.
        if fill is not None:
            check_fill(fill, 0.5)
        self.fill = fill
        if self.encoder == "transformer" and self.embedding_dim % self.num_heads:
            raise ConfigError(
                f"learned: embedding_dim ({self.embedding_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        # Kept so that save_pretrained can write the tokenizer next to the weights.
        self.tokenizer = tokenizer

        E = self.embedding_dim
        self.embed = nn.Embedding(self.vocab.vocab_size, E)
        nn.init.normal_(self.embed.weight, std=0.02)
        # No bias: absent hidden_states then contribute exactly what all-zero ones would.
        self.context_proj = nn.Linear(self.context_dim, E, bias=False) if self.context_dim else None
        self.drop = nn.Dropout(self.dropout)
        if self.encoder == "transformer":
            self.position = nn.Embedding(self.max_length, E)
            nn.init.normal_(self.position.weight, std=0.02)
            layer = nn.TransformerEncoderLayer(
                E, self.num_heads, dim_feedforward=4 * E, dropout=self.dropout,
                activation="gelu", batch_first=True, norm_first=True,
            )
            # Nested tensors do not apply to pre-LN layers; disabling them avoids a warning.
            self.body = nn.TransformerEncoder(layer, self.num_layers, enable_nested_tensor=False)
            out_dim = E
        else:
            self.position = None
            self.body = nn.GRU(
                E, E, num_layers=self.num_layers, batch_first=True, bidirectional=True,
                dropout=self.dropout if self.num_layers > 1 else 0.0,  # GRU dropout acts between layers only
            )
            out_dim = 2 * E
        # Pre-LN outputs are unnormalised, hence the LayerNorm before the linear head.
        self.head = nn.Sequential(nn.LayerNorm(out_dim), nn.Linear(out_dim, 1))
        # Small weights + init_bias: an untrained policy gives ~sigmoid(init_bias) everywhere,
        # but the weights are non-zero so gradients reach the encoder from the first step.
        nn.init.normal_(self.head[1].weight, std=0.01)
        nn.init.constant_(self.head[1].bias, self.init_bias)

    # ---- scoring -------------------------------------------------------------------------
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **extras) -> torch.Tensor:
        """[B, T] raw logits (differentiable); values at padding are unspecified but finite."""
        if input_ids.dim() != 2:
            raise ConfigError(f"learned: input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=device)
        else:
            valid = attention_mask.to(device).bool()  # [B, T]
        x = self.embed(input_ids)  # [B, T, E]
        if self.training and self.token_dropout > 0:
            keep = torch.rand(B, T, 1, device=device) >= self.token_dropout  # [B, T, 1]
            x = x * keep
        hidden = extras.get("hidden_states")
        if self.context_proj is not None and hidden is not None:
            if tuple(hidden.shape) != (B, T, self.context_dim):
                raise ConfigError(
                    f"learned: hidden_states must have shape {(B, T, self.context_dim)} "
                    f"(batch, length, context_dim), got {tuple(hidden.shape)}"
                )
            x = x + self.context_proj(hidden.to(device=x.device, dtype=x.dtype))
        h = self._encode_transformer(x, valid) if self.encoder == "transformer" else self._encode_gru(x, valid)
        return self.head(h).squeeze(-1)  # [B, T]

    def _encode_transformer(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if T > self.max_length:
            raise ConfigError(f"learned: sequence length {T} exceeds max_length={self.max_length} of this policy")
        # Positions count real tokens only ([B, T]), so left padding does not shift them.
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)
        x = self.drop(x + self.position(pos))
        # A row with no real token would make attention all -inf (NaN logits and gradients);
        # let such rows attend everywhere instead: their outputs are masked out anyway.
        pad = ~valid & ~(~valid).all(1, keepdim=True)  # [B, T], True = ignore as key
        return self.body(x, src_key_padding_mask=pad)  # [B, T, E]

    def _encode_gru(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, T, E = x.shape
        x = self.drop(x)
        # Move the real tokens of each row to the front (stable: order kept), run the GRU on
        # packed sequences so padding never enters either direction, then move them back.
        order = torch.sort((~valid).to(torch.int32), dim=1, stable=True).indices  # [B, T]
        xs = x.gather(1, order.unsqueeze(-1).expand(B, T, E))
        lengths = valid.sum(1).clamp(min=1).cpu()  # pack_padded_sequence wants CPU lengths
        packed = pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.body(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # [B, T, 2E]
        inverse = order.argsort(1)
        return out.gather(1, inverse.unsqueeze(-1).expand(B, T, out.shape[-1]))

    def scores(self, input_ids: torch.Tensor, maskable: torch.Tensor, **extras) -> torch.Tensor:
        """sigmoid(logits); ``forward`` passes ``attention_mask`` through ``extras``."""
        extras = dict(extras)
        attention_mask = extras.pop("attention_mask", None)
        return torch.sigmoid(self.logits(input_ids, attention_mask, **extras) / self.temperature)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **extras) -> torch.Tensor:
        # As the base forward, but the encoder also needs attention_mask to ignore padding.
        maskable = self.maskable(input_ids, attention_mask, extras.get("special_tokens_mask"))
        probs = self.scores(input_ids, maskable, attention_mask=attention_mask, **extras)
        return torch.where(maskable, probs, torch.zeros_like(probs))

    # ---- artifacts -----------------------------------------------------------------------
    def save_pretrained(self, directory: str, tokenizer=None, metadata: dict | None = None) -> str:
        """Write config, weights and tokenizer atomically to ``directory``; returns its path."""
        return artifacts.save_policy(self, directory, tokenizer=tokenizer, metadata=metadata)

    @classmethod
    def from_pretrained(cls, directory: str, tokenizer=None, map_location="cpu") -> "LearnedPolicy":
        """Load a saved policy (in eval mode); ``ArtifactError`` when anything is off."""
        return artifacts.load_policy(cls, directory, tokenizer=tokenizer, map_location=map_location)


def _load_directory(path: str, tokenizer=None, **options) -> LearnedPolicy:
    unknown = sorted(set(options) - {"map_location", "temperature"})
    if unknown:
        raise ConfigError(
            f"a saved policy directory takes no option {', '.join(map(repr, unknown))} (only map_location, temperature); "
            "its options are fixed when it is trained"
        )
    temperature = options.pop("temperature", None)
    policy = LearnedPolicy.from_pretrained(path, tokenizer, **options)
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(f"learned: temperature must be a positive number, got {temperature!r}")
        policy.temperature = float(temperature)
    return policy


register_directory_loader(_load_directory)
