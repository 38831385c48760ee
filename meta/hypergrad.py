"""Hypergradients of a downstream loss with respect to per-token MLM loss weights.

    phi_K(w) = K inner steps (SGD or Adam, lr) on L_in(phi, w) = sum_i w_i l_i(phi) / N
    g = d L_out(phi_K(w)) / d w                                   [B, T], 0 at unlabelled positions

    result = hypergradient(lm, inner, weights, outer, InnerConfig(steps=1, lr=1e-2), backend="func")
    weights.backward(result.grad)          # into the policy that produced the soft mask

Backends (all leave ``lm``'s parameters, ``.grad`` and ``training`` flag untouched):

``func`` (default, exact) -- ``torch.func.functional_call`` on ``{name: tensor}`` dicts.
    K=1 SGD uses the identity d L_out(phi_1)/d w_i = -lr/N <grad l_i(phi_0), grad L_out(phi_1)>:
    take phi_1 from the inner gradient, v = grad L_out(phi_1) without a graph, then one double
    backward of <grad_phi L_in(phi_0, w), v> with respect to w (only the inner gradient is built
    with create_graph). K > 1 or Adam: exact differentiation through the unrolled steps.
``higher`` (reference) -- ``higher.innerloop_ctx`` with ``torch.optim.SGD``/``Adam`` over only the
    selected parameters (the rest get ``requires_grad=False`` for the duration, then restored).
    higher's Adam adds eps to sqrt(v) *before* the bias correction (eps_eff = eps / sqrt(1-b2^k)),
    unlike ``torch.optim.Adam``; since the one-step Adam hypergradient is proportional to eps, we
    pass eps * sqrt(1-b2^k) per step through higher's ``override`` so both backends mean the same
    optimizer.
``fd`` (fast estimate) -- the K real inner steps without a graph (so ``updated`` is phi_K), then
    v = grad L_out(phi_K) and, for all tokens at once, a central difference along v at phi_0:
        g_i ~ -lr/N * (l_i(phi_0 + eps v) - l_i(phi_0 - eps v)) / (2 eps)
    Two extra forward passes, no second-order autograd. For K=1 SGD this estimates the exact
    hypergradient (error O(eps^2) plus rounding); for K>1 or Adam it is the one-step-SGD
    approximation (DARTS-like: same direction idea, Adam's step scale is not modelled).
    ``fd_eps`` is the absolute multiplier of v; the default ``1e-2 / (||v|| + 1e-12)`` makes the
    parameter perturbation an L2 step of 1e-2 over the selected parameters whatever the scale of
    v -- small next to the weights (norm ~0.02 * sqrt(#params)) so the truncation error stays
    small, large enough that float32 loss differences are far above rounding (measured on a
    4-layer float32 BERT: relative L2 error ~1e-3, cosine 1.000000; see
    benchmarks/meta_step_cost.py). In float64 a smaller fd_eps is more accurate. With dropout
    on, both perturbed passes replay the first inner forward's random state (same masks).
Cost (benchmarks/meta_step_cost.py, CPU): the double backward of ``func`` costs about one
forward, so ``fd`` (two forwards) is not faster than ``func``; its gains are memory (no graph
of the gradient) and needing no second-order autograd at all (fused attention, DDP).

Context side (``input_mask``): masking a token also hides it from the other tokens' inputs,
which loss weights cannot see (masking an entity's name together with its attribute hides
the very association a question asks about). With ``input_mask`` = a [B, T] amount ``u`` in
[0, 1] (1 at the candidates) and the *unmasked* ``input_ids``, the inner forward mixes each
word embedding toward [MASK]'s by ``u`` (``inner.input_masking``: the same forward values as
[MASK] ids at u = 1), and every backend also returns ``input_grad = dL_out(phi_K)/du`` [B, T]
for all positions: ``func``/``higher`` differentiate it exactly with ``w`` (one double backward
for K=1 SGD); ``fd`` differentiates its two perturbed forward passes with respect to ``u``
(first-order autograd only), ``-lr d/du (L_in(phi_0 + eps v, u) - L_in(phi_0 - eps v, u)) / (2 eps)``.

Non-finite L_out or g raises ``MaskpolicyError`` (the caller skips the step and reports it).
Meta-steps need eager attention (double backward through SDPA kernels fails on some
torch/transformers versions): call ``prepare_for_meta(lm)`` once before the first meta-step.
Dropout is not switched off here (``lm.training`` is the caller's): with dropout on the backends
draw their masks in the same order, so from the same random state func == higher and fd
targets the same sample; from different states they legitimately disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from maskpolicy.policies.errors import ConfigError, DataError, MaskpolicyError

from .inner import (
    InnerConfig,
    grads_or_zeros,
    labelled,
    model_device,
    model_dtype,
    outer_loss,
    per_token_loss,
    select_params,
    to_device,
    unroll,
)

__all__ = ["BACKENDS", "HyperResult", "InnerConfig", "hypergradient", "per_token_loss", "prepare_for_meta", "func_unrolled"]

BACKENDS = ("func", "higher", "fd")


@dataclass
class HyperResult:
    grad: torch.Tensor  # [B, T] dL_out/dw (weights' dtype and device), 0 at unlabelled positions
    outer_loss: float  # L_out(phi_K)
    inner_loss: float  # L_in(phi_0, w)
    updated: dict[str, torch.Tensor]  # phi_K (detached) for the updated parameter names, for co-training
    input_grad: torch.Tensor | None = None  # [B, T] dL_out/du when an input mask u was given, 0 at padding


def prepare_for_meta(lm: torch.nn.Module) -> torch.nn.Module:
    """Switch ``lm`` to eager attention (differentiable twice on every version); returns ``lm``.

    transformers 5 picks SDPA by default; its fused kernels have no double backward on some
    versions, which the ``func``/``higher`` backends need. Call once, before meta-steps.
    """
    if hasattr(lm, "set_attn_implementation"):
        lm.set_attn_implementation("eager")
    else:  # older transformers: the attribute the attention modules read
        lm.config._attn_implementation = "eager"
    return lm


class _Problem:
    """Everything the backends share: batches on the model's device, masks, counts, parameter split."""

    def __init__(self, lm, inner: dict, weights: torch.Tensor, outer: dict, config: InnerConfig,
                 input_mask: torch.Tensor | None = None) -> None:
        config.validate()
        device, dtype = model_device(lm), model_dtype(lm)
        self.lm, self.config = lm, config
        self.inner, self.outer = to_device(inner, device), to_device(outer, device)
        if "labels" not in self.inner or "labels" not in self.outer:
            raise DataError("inner and outer batches need 'labels' (-100 where a position is not a candidate)")
        # The positions w weighs: the labelled tokens, or a seq2seq batch's weight_positions.
        positions = self.inner["weight_positions"] if "weight_positions" in self.inner else self.inner["labels"]
        if tuple(weights.shape) != tuple(positions.shape):
            raise DataError(f"weights shape {tuple(weights.shape)} != inner labels shape {tuple(positions.shape)}")
        self.mask, self.n_in = labelled(self.inner, "inner")  # [B, T] bool, N
        _, self.n_out = labelled(self.outer, "outer")
        self.w_dtype, self.w_device = weights.dtype, weights.device
        self.w = weights.detach().to(device=device, dtype=dtype)  # [B, T] in the model's dtype
        self.u = None  # [B, T] input-mask amounts (context side), or None
        if input_mask is not None:
            if "weight_positions" in self.inner:
                raise ConfigError("the context side (input_mask) is defined for masked LMs only: a seq2seq "
                                  "inner batch replaces each masked span by one marker, there is no soft form")
            if tuple(input_mask.shape) != tuple(positions.shape):
                raise DataError(f"input_mask shape {tuple(input_mask.shape)} != inner labels shape {tuple(positions.shape)}")
            if self.inner.get("mask_token_id") is None:
                raise DataError("an input_mask needs the inner batch's 'mask_token_id'")
            self.u = input_mask.detach().to(device=device, dtype=dtype)
        self.names = select_params(lm, config.params)
        chosen = set(self.names)
        params = dict(lm.named_parameters())
        # phi_0: fresh leaves sharing storage with lm (never written in place); the rest is constant.
        self.phi0 = {n: params[n].detach().requires_grad_() for n in self.names}
        self.frozen = {n: p.detach() for n, p in params.items() if n not in chosen}

    def leaves(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fresh differentiable copies of (w, u)."""
        return self.w.clone().requires_grad_(), None if self.u is None else self.u.clone().requires_grad_()

    def batch(self, u: torch.Tensor | None) -> dict:
        """The inner batch, soft-masked by ``u`` when the context side is asked for."""
        return self.inner if u is None else {**self.inner, "input_mask": u}

    def result(self, grad: torch.Tensor | None, l_out: torch.Tensor, l_in: float, phi_k: dict,
               input_grad: torch.Tensor | None = None) -> HyperResult:
        l_out = float(l_out)
        if not math.isfinite(l_out):
            raise MaskpolicyError(
                f"meta-step: outer loss is {l_out} after {self.config.steps} inner step(s) "
                f"(lr={self.config.lr}, inner loss {l_in}); skip this step (lr too large or non-finite weights?)")
        grad = torch.zeros_like(self.w) if grad is None else grad.detach()
        grad = torch.where(self.mask, grad, torch.zeros_like(grad))  # exactly 0 at unlabelled positions
        if not bool(torch.isfinite(grad).all()):
            raise MaskpolicyError(f"meta-step: hypergradient has {int((~torch.isfinite(grad)).sum())} non-finite "
                                  f"entries (outer loss {l_out}); skip this step")
        if self.u is not None:
            real = self.inner["attention_mask"].bool() if "attention_mask" in self.inner else torch.ones_like(self.mask)
            input_grad = torch.zeros_like(self.u) if input_grad is None else input_grad.detach()
            input_grad = torch.where(real, input_grad, torch.zeros_like(input_grad))
            if not bool(torch.isfinite(input_grad).all()):
                raise MaskpolicyError(f"meta-step: input-mask hypergradient is not finite (outer loss {l_out}); skip this step")
            input_grad = input_grad.to(device=self.w_device, dtype=self.w_dtype)
        return HyperResult(grad=grad.to(device=self.w_device, dtype=self.w_dtype), outer_loss=l_out,
                           inner_loss=float(l_in), updated={n: phi_k[n].detach() for n in self.names},
                           input_grad=input_grad if self.u is not None else None)


def _outer_value_and_grad(p: _Problem, phi: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(L_out(phi), v = grad L_out(phi) as a dict, no graph). ``phi`` values must be leaves."""
    leaves = {n: t.detach().requires_grad_() for n, t in phi.items()}
    loss = outer_loss(p.lm, {**p.frozen, **leaves}, p.outer, p.n_out)
    return loss.detach(), grads_or_zeros(loss, leaves, create_graph=False)


def _func_one_step_sgd(p: _Problem) -> HyperResult:
    """K=1 SGD: g = -lr * d/dw <grad_phi L_in(phi_0, w), v>, v = grad L_out(phi_1) (one double backward)."""
    w, u = p.leaves()
    phi1, l_in, g0 = unroll(p.lm, p.frozen, p.phi0, p.batch(u), w, p.mask, p.n_in, p.config, create_graph=True)
    phi1 = {n: t.detach() for n, t in phi1.items()}  # the step itself is not differentiated
    l_out, v = _outer_value_and_grad(p, phi1)
    _check_outer(p, l_out, l_in)
    # Vector-Jacobian product of the inner gradient (a function of w, u) with v: <grad L_in, v> / d(w, u).
    live = [n for n in p.names if g0[n].requires_grad]
    wrt = [w] if u is None else [w, u]
    grads = torch.autograd.grad([g0[n] for n in live], wrt, grad_outputs=[v[n] for n in live], allow_unused=True)
    grad, input_grad = [None if g is None else -p.config.lr * g for g in grads] + [None] * (2 - len(grads))
    return p.result(grad, l_out, l_in, phi1, input_grad)


def _func_unrolled(p: _Problem) -> HyperResult:
    """Exact: differentiate L_out through all K (create_graph) inner steps."""
    w, u = p.leaves()
    phik, l_in, _ = unroll(p.lm, p.frozen, p.phi0, p.batch(u), w, p.mask, p.n_in, p.config, create_graph=True)
    l_out = outer_loss(p.lm, {**p.frozen, **phik}, p.outer, p.n_out)
    _check_outer(p, l_out, l_in)
    grads = torch.autograd.grad(l_out, [w] if u is None else [w, u], allow_unused=True)
    return p.result(grads[0], l_out.detach(), l_in, phik, grads[1] if u is not None else None)


def _check_outer(p: _Problem, l_out: torch.Tensor, l_in: float) -> None:
    """Fail before any further (second-order) work if the outer loss is already non-finite."""
    if not bool(torch.isfinite(l_out)):
        p.result(None, l_out.detach(), l_in, {})  # raises MaskpolicyError with the full message


def _func(p: _Problem) -> HyperResult:
    if p.config.steps == 1 and p.config.optimizer == "sgd":
        return _func_one_step_sgd(p)
    return _func_unrolled(p)


def _higher(p: _Problem) -> HyperResult:
    import higher  # optional reference backend: imported only when used

    cfg, lm = p.config, p.lm
    params = dict(lm.named_parameters())
    chosen = [params[n] for n in p.names]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(chosen, lr=cfg.lr)
    else:
        opt = torch.optim.Adam(chosen, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps)
    flags = {n: t.requires_grad for n, t in params.items()}
    w, u = p.leaves()
    try:
        # higher copies lm's parameters with their requires_grad flags: frozen ones get no
        # gradient at all (not merely no update), and lm itself is never written.
        chosen_names = set(p.names)
        for n, t in params.items():
            t.requires_grad_(n in chosen_names)
        with higher.innerloop_ctx(lm, opt, copy_initial_weights=True, track_higher_grads=True) as (fmodel, diffopt):
            l_in = float("nan")
            for k in range(1, cfg.steps + 1):
                loss = _weighted(fmodel, p, w, u)
                if k == 1:
                    l_in = float(loss.detach())
                override = None
                if cfg.optimizer == "adam":  # torch.optim.Adam's eps placement (see module doc)
                    override = {"eps": [cfg.adam_eps * math.sqrt(1.0 - cfg.adam_betas[1] ** k)]}
                diffopt.step(loss, override=override)
            l_out = outer_loss(fmodel, None, p.outer, p.n_out)
            _check_outer(p, l_out, l_in)
            grads = torch.autograd.grad(l_out, [w] if u is None else [w, u], allow_unused=True)
            # fast_params follows lm.parameters() order, which is named_parameters() order.
            phik = dict(zip(params, fmodel.fast_params))
            return p.result(grads[0], l_out.detach(), l_in, phik, grads[1] if u is not None else None)
    finally:
        for n, t in params.items():
            t.requires_grad_(flags[n])


def _weighted(fmodel, p: _Problem, w: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    wm = torch.where(p.mask, w, torch.zeros_like(w))
    return (wm * per_token_loss(fmodel, None, p.batch(u))).sum() / p.n_in


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _fd(p: _Problem, fd_eps: float | None) -> HyperResult:
    """Central difference of every l_i along v = grad L_out(phi_K), at phi_0: two forward passes.

    With dropout on (``lm.training``), both perturbed passes replay the random state of the first
    inner forward, so they see the same dropout masks as each other (otherwise the difference
    would be dominated by mask noise / 2 eps) and as the gradient that made phi_1: for K=1 SGD
    the estimate then targets the same sample the exact backends differentiate.
    """
    device = model_device(p.lm)
    start = _rng_state(device)
    phik, l_in, _ = unroll(p.lm, p.frozen, p.phi0, p.batch(p.u), p.w, p.mask, p.n_in, p.config, create_graph=False)
    l_out, v = _outer_value_and_grad(p, phik)
    _check_outer(p, l_out, l_in)
    end = _rng_state(device)  # where the caller's random stream continues afterwards
    u = None if p.u is None else p.u.clone().requires_grad_()
    with torch.no_grad():
        norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v.values()))
    eps = 1e-2 / (float(norm) + 1e-12) if fd_eps is None else fd_eps
    losses = []
    # Parameters are constants here; only u (context side) is differentiated, first order.
    with torch.set_grad_enabled(u is not None):
        for sign in (1.0, -1.0):
            _set_rng_state(device, start)
            shifted = {n: (p.phi0[n] + (sign * eps) * v[n]).detach() for n in p.names}
            losses.append(per_token_loss(p.lm, {**p.frozen, **shifted}, p.batch(u)))  # [B, T]
    _set_rng_state(device, end)
    diff = (losses[0] - losses[1]) / (2.0 * eps)  # [B, T] ~ <grad l_i(phi_0), v>
    grad = -p.config.lr / p.n_in * diff.detach()
    input_grad = None
    if u is not None:  # d/du of <grad L_in(phi_0, w, u), v>, L_in = sum_i w_i l_i / N
        weighted = (torch.where(p.mask, p.w, torch.zeros_like(p.w)) * diff).sum() / p.n_in
        input_grad = -p.config.lr * torch.autograd.grad(weighted, u)[0]
    return p.result(grad, l_out, l_in, phik, input_grad)


def hypergradient(
    lm, inner: dict, weights: torch.Tensor, outer: dict, config: InnerConfig,
    backend: str = "func", fd_eps: float | None = None, input_mask: torch.Tensor | None = None,
) -> HyperResult:
    """dL_out(phi_K(w))/dw for per-token inner weights ``weights`` [B, T] (see the module doc);
    with ``input_mask`` (u [B, T], the inner batch then holds unmasked ``input_ids`` and
    ``mask_token_id``) also ``input_grad = dL_out/du``, the context side of masking.

    Raises ConfigError (bad config/backend/fd_eps), DataError (no labelled positions, shape
    mismatch) and MaskpolicyError (non-finite outer loss or hypergradient: skip the step).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown hypergradient backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if fd_eps is not None and (not isinstance(fd_eps, (int, float)) or not math.isfinite(fd_eps) or fd_eps <= 0):
        raise ConfigError(f"fd_eps must be a finite number > 0 (or None for the default), got {fd_eps!r}")
    problem = _Problem(lm, inner, weights, outer, config, input_mask)
    try:
        with torch.enable_grad():
            if backend == "func":
                return _func(problem)
            if backend == "higher":
                return _higher(problem)
            return _fd(problem, fd_eps)
    except RuntimeError as err:
        attn = getattr(lm.config, "_attn_implementation", None)
        if backend != "fd" and attn not in (None, "eager"):
            raise MaskpolicyError(f"meta-step failed with {attn!r} attention ({str(err).splitlines()[0]}); "
                                  "call maskpolicy.meta.hypergrad.prepare_for_meta(lm) to use eager attention") from err
        raise


def func_unrolled(lm, inner: dict, weights: torch.Tensor, outer: dict, config: InnerConfig,
                  input_mask: torch.Tensor | None = None) -> HyperResult:
    """The ``func`` backend without the K=1 SGD shortcut (always unrolled); for checks and timing."""
    with torch.enable_grad():
        return _func_unrolled(_Problem(lm, inner, weights, outer, config, input_mask))
