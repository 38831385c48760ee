"""The inner problem of a meta-step: weighted MLM loss, parameter selection, optimizer steps.

Shapes used throughout (a masked LM; ``seq2seq_inner.py`` gives the encoder-decoder form,
whose per-token losses come back in the same [B, T] positions): a batch is a dict of
``input_ids``, ``attention_mask`` (and optionally
``token_type_ids``) and ``labels``, all [B, T]; ``labels`` is -100 where a position is not a
candidate. Per-token weights ``w`` are [B, T] floats; only labelled positions matter.

    L_in(phi, w) = sum_i w_i * l_i(phi) / N      (N = number of labelled inner positions)
    L_out(phi)   = mean of l_j(phi) over the labelled outer positions

Parameters are handled as ``{name: tensor}`` dicts keyed by ``lm.named_parameters()`` names and
run through ``torch.func.functional_call``. ``named_parameters()`` lists a tied tensor once
(BERT's decoder weight is the word-embedding matrix, under the embedding's name), and
``functional_call`` (``tie_weights=True``) feeds a replacement to every place it is tied to, so
an inner step keeps input and output embeddings tied exactly as training would.

The Adam update is ``torch.optim.Adam``'s (eps added to ``sqrt(v_hat)``), written out so that
it can be differentiated; ``tests/test_hypergrad.py`` checks it against ``torch.optim.Adam``.
"""
from __future__ import annotations

import math
import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from maskpolicy.policies.errors import ArtifactError, ConfigError, DataError
from maskpolicy.train.head import projection_at

from .seq2seq_inner import is_encoder_decoder, seq2seq_per_token_loss

OPTIMIZERS = ("sgd", "adam")
IGNORE_INDEX = -100
# Inputs a masked LM's forward takes from a batch; other keys (word_ids, span_ids, ...) are ignored.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class InnerConfig:
    """K inner optimizer steps on the weighted MLM loss (what the hypergradient differentiates through)."""

    steps: int = 1  # K >= 1
    lr: float = 1e-2  # > 0
    optimizer: str = "sgd"  # "sgd" | "adam" (torch.optim.Adam semantics, no weight decay)
    params: str = "all"  # "all", or a regex searched in named_parameters() names, e.g. "encoder|cls"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for any out-of-range field (also called again by ``hypergradient``)."""
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"inner steps must be an integer >= 1, got {self.steps!r}")
        if not _is_real(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"inner lr must be a finite number > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown inner optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if not isinstance(self.params, str) or not self.params:
            raise ConfigError(f"inner params must be 'all' or a non-empty regex, got {self.params!r}")
        if self.params != "all":
            try:
                re.compile(self.params)
            except re.error as err:
                raise ConfigError(f"inner params: invalid regex {self.params!r}: {err}") from None
        betas = tuple(self.adam_betas)
        if len(betas) != 2 or not all(_is_real(b) and 0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        self.adam_betas = (float(betas[0]), float(betas[1]))
        if not _is_real(self.adam_eps) or not self.adam_eps > 0:
            raise ConfigError(f"adam_eps must be > 0, got {self.adam_eps!r}")


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def select_params(lm: torch.nn.Module, pattern: str) -> list[str]:
    """Names (``named_parameters()`` order) of the parameters the inner steps update.

    ``requires_grad`` flags are ignored on purpose: a caller may freeze the LM for its own
    optimizer while the inner steps still update a functional copy of it.
    """
    names = [n for n, _ in lm.named_parameters()]
    if pattern != "all":
        regex = re.compile(pattern)
        names = [n for n in names if regex.search(n)]
    if not names:
        raise ConfigError(f"inner params regex {pattern!r} matches no parameter of {type(lm).__name__}")
    return names


def model_dtype(lm: torch.nn.Module) -> torch.dtype:
    return next(lm.parameters()).dtype


def model_device(lm: torch.nn.Module) -> torch.device:
    return next(lm.parameters()).device


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@contextmanager
def input_masking(lm, amount: torch.Tensor, mask_token_id: int):
    """Inside, ``lm``'s word embeddings are mixed toward the mask token's:
    ``e_t <- (1 - a_t) e_t + a_t e_[MASK]`` with ``amount`` a [B, T] in [0, 1]. At ``a_t = 1`` the
    input is exactly a [MASK] at t, at 0 the token itself; in between it is differentiable, so
    ``d loss / d a_t`` says what hiding token t from the input does (the context side of
    masking, which per-token loss weights cannot see). A forward hook on the input-embedding
    module: it reads the module's own weight, so it follows ``functional_call`` and ``higher``'s
    fast weights alike."""
    module = lm.get_input_embeddings()

    def mix(mod, args, out):  # out: [B, T, H]
        a = amount.to(out.dtype).unsqueeze(-1)  # [B, T, 1]
        return out * (1.0 - a) + mod.weight[mask_token_id] * a

    hook = module.register_forward_hook(mix)
    try:
        yield
    finally:
        hook.remove()


def per_token_loss(lm, params: dict | None, batch: dict) -> torch.Tensor:
    """[B, T] MLM cross-entropy per token, 0 where ``labels == -100``.

    A batch with ``input_mask`` ([B, T] floats, and ``mask_token_id``) feeds its unmasked
    ``input_ids`` through ``input_masking``: the soft-masked input of the context-aware
    hypergradient (``hypergrad.py``).

    With ``params`` the model runs on those tensors (``functional_call``; names it lacks fall
    back to the module's own). ``lm`` may also be a ``higher`` patched module (``params=None``).

    Only labelled positions reach the vocabulary projection (``maskpolicy.train.head.projection_at``):
    only ~15% of inner positions (one per outer row) are labelled, so this cuts every forward,
    backward and double backward here by a large factor. Same numbers as full logits.
    """
    if "labels" not in batch:
        raise DataError("batch has no 'labels' (-100 where a position is not a candidate)")
    if is_encoder_decoder(lm):  # decoder CE, scattered back to the original positions
        return seq2seq_per_token_loss(lm, params, batch)
    labels = batch["labels"]  # [B, T]
    mask = labels != IGNORE_INDEX  # [B, T]
    kwargs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    gathered = isinstance(head, torch.nn.Module)
    with ExitStack() as stack:
        if gathered:
            stack.enter_context(projection_at(head, mask))
        if batch.get("input_mask") is not None:
            stack.enter_context(input_masking(lm, batch["input_mask"], int(batch["mask_token_id"])))
        out = lm(**kwargs) if params is None else functional_call(lm, params, args=(), kwargs=kwargs)
    logits = out.logits  # [n, V] (gathered) or [B, T, V]
    if not gathered:
        logits = logits[mask]
    if logits.dim() != 2 or logits.shape[0] != int(mask.sum()):
        raise ArtifactError(f"{type(lm).__name__}: unexpected logits shape {tuple(out.logits.shape)} for "
                          f"{int(mask.sum())} labelled positions (not a standard masked-LM head?)")
    loss = F.cross_entropy(logits, labels[mask], reduction="none")  # [n]
    return loss.new_zeros(labels.shape).index_put((mask,), loss)  # [B, T], 0 where unlabelled


def labelled(batch: dict, what: str) -> tuple[torch.Tensor, int]:
    """(mask [B, T] bool of labelled positions, their count); DataError if there are none.
    A seq2seq inner batch names them (``weight_positions``: the candidates in the original
    passage); elsewhere they are where ``labels`` is not -100."""
    mask = batch["weight_positions"].bool() if "weight_positions" in batch else batch["labels"] != IGNORE_INDEX
    count = int(mask.sum())
    if count == 0:
        raise DataError(f"the {what} batch has no labelled positions (labels are all -100)")
    return mask, count


def inner_loss(lm, params: dict, batch: dict, weights: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """Scalar L_in = sum_i w_i l_i / N. ``weights`` [B, T]; ignored (zeroed) where ``mask`` is False,
    so that garbage (even inf) at unlabelled positions cannot leak in through 0 * inf."""
    w = torch.where(mask, weights, torch.zeros_like(weights))
    return (w * per_token_loss(lm, params, batch)).sum() / count


def outer_loss(lm, params: dict | None, batch: dict, count: int) -> torch.Tensor:
    """Scalar L_out = mean CE over the ``count`` labelled outer positions."""
    return per_token_loss(lm, params, batch).sum() / count


class InnerOptimizer:
    """SGD or Adam on a ``{name: tensor}`` dict, differentiable when the gradients carry a graph.

    Adam follows ``torch.optim.Adam`` (amsgrad off, no weight decay):
        m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
        p <- p - lr/(1-b1^k) * m / (sqrt(v)/sqrt(1-b2^k) + eps)
    ``sqrt`` is taken as ``where(v > 0, sqrt(v), 0)`` with a guarded argument: entries whose
    gradient is exactly 0 so far (e.g. embedding rows of tokens absent from the batch) would
    otherwise put d sqrt/dv = inf into the double backward and turn the hypergradient into NaN;
    their true derivative with respect to the weights is 0 anyway.
    """

    def __init__(self, config: InnerConfig) -> None:
        self.config = config
        self.k = 0
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.k += 1
        if cfg.optimizer == "sgd":
            return {n: p - cfg.lr * grads[n] for n, p in params.items()}
        b1, b2 = cfg.adam_betas
        bc1, bc2 = 1.0 - b1**self.k, 1.0 - b2**self.k
        new = {}
        for n, p in params.items():
            g = grads[n]
            m = g * (1.0 - b1) if n not in self.m else self.m[n] * b1 + g * (1.0 - b1)
            v = g * g * (1.0 - b2) if n not in self.v else self.v[n] * b2 + g * g * (1.0 - b2)
            self.m[n], self.v[n] = m, v
            positive = v > 0
            root = torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))
            new[n] = p - (cfg.lr / bc1) * m / (root / math.sqrt(bc2) + cfg.adam_eps)
        return new


def grads_or_zeros(loss: torch.Tensor, params: dict[str, torch.Tensor], create_graph: bool) -> dict[str, torch.Tensor]:
    """d loss / d params as a dict; a parameter the loss does not reach gets zeros."""
    names = list(params)
    got = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    return {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, got)}


def unroll(
    lm, frozen: dict, phi0: dict, batch: dict, weights: torch.Tensor, mask: torch.Tensor, count: int,
    config: InnerConfig, create_graph: bool,
) -> tuple[dict[str, torch.Tensor], float, dict[str, torch.Tensor]]:
    """Take ``config.steps`` inner steps from ``phi0`` (leaves that require grad).

    Returns (phi_K, L_in(phi_0, w) as a float, the first step's gradient dict). With
    ``create_graph`` phi_K is a differentiable function of ``weights`` (and of ``phi0``);
    without it each step starts from fresh detached leaves, so no graph outlives a step.
    """
    opt = InnerOptimizer(config)
    phi = phi0
    first_loss, first_grads = float("nan"), {}
    for k in range(config.steps):
        loss = inner_loss(lm, {**frozen, **phi}, batch, weights, mask, count)
        grads = grads_or_zeros(loss, phi, create_graph)
        if k == 0:
            first_loss, first_grads = float(loss.detach()), grads
        if create_graph:
            phi = opt.step(phi, grads)
        else:
            with torch.no_grad():
                phi = {n: p.requires_grad_() for n, p in opt.step(phi, grads).items()}
    return phi, first_loss, first_grads
