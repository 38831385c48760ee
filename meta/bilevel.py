"""Learning a masking policy from the downstream loss alone: bilevel meta-gradients.

One meta-step:
1. pair the batches: draw ``outer_batch`` training questions, take the corpus passages about
   the same things (same ``key``) as the inner batch, so that one inner step on those
   passages can change the answers to those questions;
2. explore: a random ``explore_rate`` of the inner tokens become candidates ([MASK] in the
   input, labelled); the policy's probabilities on them are the soft mask weights ``w``;
3. hypergradient ``g = dL_out(phi_K(w)) / dw`` [B, T] from one of the backends in
   ``hypergrad.py`` (K differentiable inner MLM steps, then the cloze loss). With an
   encoder-decoder LM (BART, T5) the inner steps are denoising steps on the explored spans
   (``output`` "spans" or "full") and the outer loss is the answer tokens' CE, the
   question read as denoising or as question -> answer (``outer``; ``seq2seq_inner.py``);
   With ``context`` the candidates are masked softly in the input (``input_mask``, exactly
   [MASK] at the candidates), and ``g`` also holds the context side ``dL_out/du``: what
   hiding each candidate from the other tokens' inputs does downstream;
4. the policy learns from ``g`` (``objective``): ``"distill"`` fits it to targets made from
   ``g`` (``targets.py``: helpful tokens 1, harmful 0, neutral in between with the default
   ``three_way`` rule), ``"chain"`` back-propagates ``sum g * p`` (the exact chain rule through ``w = p``);
5. co-training (``co_train``): the language model takes an MLM step on masks drawn from
   the current policy ("mlm"), keeps its differentiable inner update ("inner"), or stays
   as it is ("none").

A step whose hypergradient or loss is not finite is skipped and counted, never applied.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from maskpolicy.policies import LearnedPolicy, Masker, MaskingCollator, MaskingConfig
from maskpolicy.policies.errors import ConfigError, DataError, MaskpolicyError
from maskpolicy.tasks.base import Task
from maskpolicy.tasks.features import encode_cloze, encode_passages

from .hypergrad import InnerConfig, hypergradient, prepare_for_meta
from .seq2seq_inner import is_encoder_decoder, meta_collator, seq2seq_inner_batch, seq2seq_outer_batch
from .targets import TARGET_RULES, balanced_weights, distill_targets, otsu_split  # noqa: F401  (otsu_split: re-export)


@dataclass
class MetaConfig:
    meta_steps: int = 300
    outer_batch: int = 16  # questions (and their passages) per meta-step
    backend: str = "func"  # func | higher | fd
    inner: InnerConfig = field(default_factory=lambda: InnerConfig(steps=1, lr=0.05, optimizer="sgd"))
    explore_rate: float = 0.3  # share of inner tokens that are candidates in a meta-step
    objective: str = "distill"  # distill | chain
    targets: str = "three_way"  # distillation targets (targets.py): "three_way" = helpful 1, harmful 0,
    #   the rest ``neutral_target``; "split" = helpful 1 (candidates above the Otsu split of -g, at
    #   most the rate share), the rest 0; "share" = exactly the rate share with the most negative g.
    #   Split vs share, cloze EM after 1,000 intermediate steps, birthplace seeds 0 / 2: 0.99 / 0.99
    #   against 0.61 / 0.31 (answer recall 1.0 either way: share also labels next-best tokens)
    neutral_target: float | None = None  # three_way: target of neutral candidates (None = rate)
    split_margin: float = 0.5  # three_way: helpful = -g >= margin x the Otsu split of the helpful -g
    balance: bool = False  # up-weight positives (negatives/positives, at most 20) so that p >= 0.5 on them
    output: str = "spans"  # seq2seq inner models: the decoder target, "spans" or "full" (seq2seq_inner.py)
    outer: str = "cloze"  # seq2seq: the outer loss reads the questions as denoising ("cloze") or as
    #   question -> answer pairs ("qa"); see seq2seq_inner.seq2seq_outer_batch
    context: bool = False  # g also holds the context side: what hiding a candidate from the input does
    #   (on the dense world ~1/50 of the loss side with the warmed LM: the same policies came out)
    rate: float = 0.15  # the budget the policy is used with (distillation targets)
    policy_lr: float = 3e-3
    co_train: str = "none"  # none: the LM stays as warmed up (default: the strongest signal,
    #   see meta/learn.py); mlm: it also takes an AdamW MLM step on the policy's masks;
    #   inner: it keeps its differentiable inner update
    lm_lr: float = 1e-3  # co_train="mlm"
    entropy_weight: float = 0.0  # + H(p): keeps probabilities away from 0/1 early
    budget_weight: float = 0.0  # + (mean p - rate)^2: keeps the mean near the budget
    grad_clip: float = 1.0
    max_length: int = 64
    seed: int = 0
    eval_every: int = 25

    def __post_init__(self) -> None:
        if isinstance(self.inner, dict):
            self.inner = InnerConfig(**{"steps": 1, "lr": 0.05, "optimizer": "sgd", **self.inner})
        if self.backend not in ("func", "higher", "fd"):
            raise ConfigError(f"backend must be func, higher or fd, got {self.backend!r}")
        if self.co_train not in ("mlm", "inner", "none"):
            raise ConfigError(f"co_train must be mlm, inner or none, got {self.co_train!r}")
        if self.objective not in ("distill", "chain"):
            raise ConfigError(f"objective must be distill or chain, got {self.objective!r}")
        if self.output not in ("spans", "full"):
            raise ConfigError(f"unknown output format {self.output!r}; choose 'spans' or 'full'")
        if self.outer not in ("cloze", "qa"):
            raise ConfigError(f"unknown outer form {self.outer!r}; choose 'cloze' or 'qa'")
        if self.targets not in TARGET_RULES:
            raise ConfigError(f"targets must be one of {', '.join(TARGET_RULES)}, got {self.targets!r}")
        if not 0.0 < self.split_margin <= 1.0:
            raise ConfigError(f"split_margin must be in (0, 1], got {self.split_margin!r}")
        if self.neutral_target is not None and not 0.0 <= self.neutral_target < 1.0:
            raise ConfigError(f"neutral_target must be in [0, 1) or None, got {self.neutral_target!r}")
        for name in ("meta_steps", "outer_batch", "policy_lr", "max_length"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 < self.explore_rate <= 1.0 or not 0.0 < self.rate < 1.0:
            raise ConfigError("explore_rate must be in (0, 1] and rate in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


class PairedBatches:
    """Outer questions and the inner passages with the same keys, tokenised once."""

    def __init__(self, task: Task, tokenizer, max_length: int, seed: int) -> None:
        if task.kind != "cloze" or not task.train:
            raise DataError(f"meta-learning needs a cloze task with training questions; {task.name} has none")
        passages = encode_passages(tokenizer, task.corpus, max_length=max_length, span_splits=())
        questions = encode_cloze(tokenizer, task.train, max_length=max_length)
        self.pad = MaskingCollator(tokenizer).pad
        self.passages_by_key: dict[str, list[int]] = {}
        for i, key in enumerate(passages["key"]):
            self.passages_by_key.setdefault(key, []).append(i)
        # (encoded row, question): the seq2seq outer batch is made from the question itself.
        self.questions = [(row, q) for row, q in zip(questions, task.train) if row["key"] in self.passages_by_key]
        if not self.questions:
            raise DataError(f"task {task.name}: no training question shares a key with a corpus passage; "
                            "meta-learning pairs questions with the passages about the same thing")
        self.passages, self.max_length = passages, max_length
        self.rng = random.Random(seed)

    def sample(self, n: int, seq2seq=None, form: str = "cloze") -> tuple[dict, dict]:
        """(inner passages, outer questions); with ``seq2seq`` (the meta-step's collator of
        an encoder-decoder LM) the outer batch is ``seq2seq_inner.seq2seq_outer_batch``'s."""
        chosen = self.rng.sample(self.questions, min(n, len(self.questions)))
        rows = [i for q, _ in chosen for i in self.passages_by_key[q["key"]]]
        inner = self.pad([{"input_ids": self.passages[i]["input_ids"]} for i in rows])
        if seq2seq is not None:
            return inner, seq2seq_outer_batch(seq2seq, [q for _, q in chosen], self.max_length, form=form)
        outer = self.pad([{"input_ids": q["input_ids"], "labels": q["labels"]} for q, _ in chosen])
        return inner, outer


def explore(inner: dict, policy: LearnedPolicy, rate: float, generator: torch.Generator) -> dict:
    """Mask a random ``rate`` of the maskable inner tokens (all [MASK]); labels there."""
    ids = inner["input_ids"]
    maskable = policy.maskable(ids, inner["attention_mask"])
    pick = (torch.rand(ids.shape, generator=generator) < rate) & maskable
    # At least one candidate per row: the row's first maskable token when none was drawn.
    none = ~pick.any(dim=1)
    first = maskable.float().argmax(dim=1)
    pick[none, first[none]] = maskable[none, first[none]]
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    return {"input_ids": ids.masked_fill(pick, policy.vocab.mask_id), "attention_mask": inner["attention_mask"],
            "labels": labels, "original_ids": ids}


def meta_learn(policy: LearnedPolicy, lm, task: Task, tokenizer, config: MetaConfig, *,
               progress: bool = True, on_eval=None, snapshot_at: set[int] | None = None) -> dict:
    """Train ``policy`` by meta-gradients on ``task``; returns a report (history, skipped).

    ``snapshot_at``: meta-steps after which a copy of the policy's weights is kept, returned
    as ``report["snapshots"] = {step: state_dict}`` (not JSON: the caller pops it)."""
    seq2seq = is_encoder_decoder(lm)
    if seq2seq and config.context:
        raise ConfigError("context=True is defined for masked LMs only; a seq2seq inner model hides each masked "
                          "span behind one marker (set context: false)")
    torch.manual_seed(config.seed)
    prepare_for_meta(lm)
    batches = PairedBatches(task, tokenizer, config.max_length, config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.policy_lr)
    # Linear decay to zero: the hypergradient targets are noisy (random exploration, a
    # co-trained LM), so late steps should average them rather than chase the last one.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: max(0.0, 1.0 - i / config.meta_steps))
    lm_optimizer = torch.optim.AdamW(lm.parameters(), lr=config.lm_lr) if config.co_train == "mlm" else None
    lm_masker = Masker(policy, MaskingConfig(rate=config.rate))
    corrupter = meta_collator(tokenizer, config.output, lm) if seq2seq else None  # given masks -> span corruption
    if seq2seq:  # co_train="mlm" for a seq2seq model: a denoising step on the policy's spans
        from maskpolicy.policies.seq2seq_collator import Seq2SeqMaskingCollator

        denoiser = Seq2SeqMaskingCollator(tokenizer, policy, output=config.output, mlm_probability=config.rate,
                                          model=lm)
    history, skipped, snapshots = [], 0, {}
    bar = tqdm(range(1, config.meta_steps + 1), desc=f"meta ({config.backend})", disable=not progress)
    for step in bar:
        inner, outer = batches.sample(config.outer_batch, corrupter, config.outer)
        inner = explore(inner, policy, config.explore_rate, generator)
        policy.train()
        probs = policy(inner["original_ids"], inner["attention_mask"])  # [B, T], differentiable
        candidates = inner["labels"] != -100
        hyper_inner = {k: inner[k] for k in ("input_ids", "attention_mask", "labels")}
        if seq2seq:  # each run of candidates one marker; the decoder reconstructs them
            hyper_inner = seq2seq_inner_batch(corrupter, inner["original_ids"], inner["attention_mask"], candidates)
        if config.context:  # unmasked ids, masked softly: same forward, plus d/du
            hyper_inner.update(input_ids=inner["original_ids"], mask_token_id=policy.vocab.mask_id)
        try:
            result = hypergradient(lm, hyper_inner, probs.detach().to(next(lm.parameters()).dtype), outer,
                                   config.inner, backend=config.backend,
                                   input_mask=candidates.float() if config.context else None)
        except MaskpolicyError as err:  # NaN guard: skip, report, leave policy and LM untouched
            skipped += 1
            bar.write(f"meta-step {step} skipped: {err}")
            continue
        g = result.grad.to(probs.dtype)  # [B, T], 0 outside the candidates
        if config.context:
            g = g + torch.where(candidates, result.input_grad.to(probs.dtype), torch.zeros_like(g))
        maskable = policy.maskable(inner["original_ids"], inner["attention_mask"])
        if config.objective == "distill":
            target = distill_targets(g, candidates, config.rate, config.targets, config.neutral_target,
                                     config.split_margin)
            weight = balanced_weights(target, candidates) if config.balance else candidates.to(g.dtype)
            logits = policy.logits(inner["original_ids"], inner["attention_mask"])
            loss = F.binary_cross_entropy_with_logits(logits[candidates], target[candidates], weight=weight[candidates])
        else:  # exact chain rule through w = p, scale-free: g normalised by its mean magnitude
            scale = g[candidates].abs().mean().clamp_min(1e-12)
            loss = (g / scale * probs)[candidates].sum() / candidates.sum()
        p = probs[maskable]
        if config.entropy_weight:
            entropy = -(p * p.clamp_min(1e-6).log() + (1 - p) * (1 - p).clamp_min(1e-6).log()).mean()
            loss = loss - config.entropy_weight * entropy
        if config.budget_weight:
            loss = loss + config.budget_weight * (p.mean() - config.rate) ** 2
        if not torch.isfinite(loss):
            skipped += 1
            bar.write(f"meta-step {step} skipped: non-finite policy loss")
            continue
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        if config.co_train == "inner":
            with torch.no_grad():
                params = dict(lm.named_parameters())
                for name, value in result.updated.items():
                    params[name].copy_(value)
        elif config.co_train == "mlm":  # intermediate pre-training with the current policy
            policy.eval()
            passages = {"input_ids": inner["original_ids"], "attention_mask": inner["attention_mask"]}
            masked = denoiser.corrupt(passages, generator) if seq2seq else lm_masker(passages, generator=generator)
            lm_optimizer.zero_grad()
            lm(**masked).loss.backward()
            lm_optimizer.step()
        bar.set_postfix(outer=f"{result.outer_loss:.3f}")
        if snapshot_at and step in snapshot_at:
            snapshots[step] = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        if on_eval is not None and (step % config.eval_every == 0 or step == config.meta_steps):
            policy.eval()
            metrics = on_eval(policy)
            history.append({"step": step, "outer_loss": round(result.outer_loss, 5), **metrics})
            bar.set_postfix(outer=f"{result.outer_loss:.3f}", **{k: f"{v:.3f}" for k, v in metrics.items()})
    policy.eval()
    return {"history": history, "skipped_steps": skipped, "config": config.to_dict(), "snapshots": snapshots}
