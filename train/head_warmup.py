"""Warm up a newly initialised MLM head with the pretrained body frozen.

A pretrained encoder without an MLM head (a sentence encoder such as all-MiniLM-L6-v2, or a
classifier's body) loads as ``BertForMaskedLM`` with a random head transform and output
bias (the decoder weight is tied to the pretrained word embeddings). Training everything at
once from there sends the random head's large early gradients into the pretrained body; so
first only the new parameters are trained, on the run's own corpus with random 15% masking,
for ``head_warmup_steps`` steps (default ``DEFAULT_STEPS`` when anything is new, else none),
and only then does the intermediate pre-training move the body.

Deterministic for a seed: the data order and the masks come from generators seeded from the
run's seed, apart from the main loop's streams. Every process of a multi-process run warms up
the same way before the model is wrapped (DDP broadcasts rank 0's weights in any case).
"""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from maskpolicy.policies import Masker, MaskingCollator, MaskingConfig, get_policy

from .head import masked_lm_loss

# Measured (minilm-l6 on WikiText-2, batch 32 x 64, 2 CPU threads, 0.5 s a step): MLM loss
# over the last 20 of 150 steps at lr 1e-3 / 3e-3 / 1e-2: 6.17 / 6.06 / 6.01 (from about
# 7.5); 1e-3 reaches 6.00 only after 300 steps. A frozen sentence encoder's body bounds how
# low the head alone gets, so 200 steps at 1e-2 (under 2 minutes) take most of the gain.
DEFAULT_STEPS = 200
_SEED_OFFSET = 7_777_777  # the warm-up's streams, apart from the main loop's


def warm_up_head(model, new_parameters: list[str], dataset, tokenizer, *, steps: int, batch_size: int,
                 learning_rate: float, seed: int, device, progress: bool = False) -> dict:
    """Train ``new_parameters`` (names in ``model.named_parameters()``) for ``steps`` steps,
    everything else frozen; returns what happened (for results.json)."""
    params = dict(model.named_parameters())
    trained = [name for name in new_parameters if name in params]  # tied copies appear once
    if steps <= 0 or not trained:
        return {"steps": 0, "trained": trained}
    frozen_state = {name: p.requires_grad for name, p in params.items()}
    for name, p in params.items():
        p.requires_grad_(name in trained)
    optimizer = torch.optim.AdamW([params[name] for name in trained], lr=learning_rate, weight_decay=0.0)
    masker = Masker(get_policy("random", tokenizer), MaskingConfig())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=MaskingCollator(tokenizer).pad,
                        drop_last=len(dataset) >= batch_size,
                        generator=torch.Generator().manual_seed(seed + _SEED_OFFSET))
    head = model.get_output_embeddings()
    losses, started, step = [], time.perf_counter(), 0
    model.to(device).train()
    bar = tqdm(total=steps, desc="head warm-up (body frozen)", disable=not progress)
    try:
        while step < steps:
            for batch in loader:
                generator = torch.Generator().manual_seed(seed + _SEED_OFFSET + 1 + step)
                torch.manual_seed(seed + _SEED_OFFSET - 1 - step)  # dropout
                masked = masker({k: v.to(device) for k, v in batch.items()}, generator=generator)
                loss = masked_lm_loss(model, masked, head)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([params[name] for name in trained], 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if step == steps:
                    break
    finally:
        bar.close()
        for name, p in params.items():
            p.requires_grad_(frozen_state[name])
    window = max(1, min(20, steps // 5))  # mean of the first and last few steps: single losses are noisy
    return {"steps": steps, "trained": trained, "learning_rate": learning_rate,
            "loss_first": round(sum(losses[:window]) / window, 4), "loss_last": round(sum(losses[-window:]) / window, 4),
            "seconds": round(time.perf_counter() - started, 2)}
