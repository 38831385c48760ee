"""Look at a policy: its mask probabilities over a text, in the terminal or as a PNG.

    view = policy_view(policy, tokenizer, "Dravik was born in Velmora .", rate=0.15, seed=0)
    print(render_terminal(view))
    save_heatmap(view, "policy.png")      # needs matplotlib (pip install maskpolicy[plot])

A corpus passage as pre-training sees it: pass its ``encode_passages`` row as extras,
``policy_view(policy, tokenizer, passage.text, max_length=64, extras={"word_ids": row["word_ids"],
"span_ids": row["span_ids"]})``; gold-span tokens are then marked (``g``) in the view.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .base import MaskingPolicy
from .errors import ConfigError, DataError
from .masker import Masker, MaskingConfig


@dataclass
class PolicyView:
    policy: str
    tokens: list[str]  # without [CLS]/[SEP]
    probs: list[float]  # the policy's probability per token
    masked: list[bool]  # one sampled mask with the exact budget
    rate: float
    gold: list[bool] | None = None  # token in a gold span (when span_ids were given)


def policy_view(policy: MaskingPolicy, tokenizer, text: str, *, rate: float = 0.15, seed: int = 0,
                deterministic: bool = False, max_length: int = 512,
                extras: dict[str, list[int]] | None = None, fill: str | None = None) -> PolicyView:
    """The policy's probabilities and one sampled mask over ``text``.

    ``extras``: per-token lists over the tokenised text (special tokens included, one entry
    per token of ``tokenizer(text, truncation=True, max_length=max_length)``, as
    ``maskpolicy.tasks.features.encode_passages`` gives them), passed to the policy like a collated
    batch passes them: ``word_ids`` replaces the tokenizer's words, ``span_ids`` (gold spans,
    -1 outside) reaches ``salient_span`` and fills ``PolicyView.gold``."""
    if not text or not text.strip():
        raise DataError("--text is empty")
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    n_tokens = enc["input_ids"].shape[1]
    extras = dict(extras or {})
    for name, values in extras.items():
        if len(values) != n_tokens:
            raise DataError(f"extra {name!r} has {len(values)} entries for the {n_tokens} tokens of {text[:60]!r} "
                            f"(max_length={max_length}); encode the text with the same tokenizer and max_length")
    word_ids = list(extras.pop("word_ids", None) or [-1 if w is None else w for w in enc.word_ids(0)])
    tensors = {"word_ids": torch.tensor([word_ids])}
    tensors.update({name: torch.tensor([list(values)]) for name, values in extras.items()})
    masker = Masker(policy, MaskingConfig(rate=rate, deterministic=deterministic, fill=fill))
    with torch.no_grad():
        mask, probs = masker.select(enc["input_ids"], enc["attention_mask"],
                                    torch.Generator().manual_seed(seed), **tensors)
    keep = [i for i, w in enumerate(word_ids) if w >= 0]
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    span_ids = extras.get("span_ids")
    return PolicyView(
        policy=getattr(policy, "name", type(policy).__name__),
        tokens=[tokens[i] for i in keep],
        probs=[float(probs[0, i]) for i in keep],
        masked=[bool(mask[0, i]) for i in keep],
        rate=rate,
        gold=None if span_ids is None else [int(span_ids[i]) >= 0 for i in keep],
    )


def render_terminal(view: PolicyView, width: int = 30) -> str:
    """One token per line: probability bar, value and whether the sampled mask took it."""
    top = max(view.probs) if view.probs and max(view.probs) > 0 else 1.0
    tok_w = min(24, max(len(t) for t in view.tokens))
    gold = view.gold
    lines = [f"policy {view.policy}: mask probabilities (bar scaled to the maximum {top:.3g}); "
             f"* = in one sampled mask at rate {view.rate}" + ("; g = in a gold span" if gold is not None else "")]
    for i, (tok, p, m) in enumerate(zip(view.tokens, view.probs, view.masked)):
        bar = "#" * round(width * p / top)
        flag = "" if gold is None else ("g " if gold[i] else "  ")
        lines.append(f"{'*' if m else ' '} {flag}{tok[:tok_w]:<{tok_w}} {p:6.3f} {bar}")
    n = sum(view.masked)
    lines.append(f"{n} of {len(view.tokens)} tokens masked"
                 + (f"; {sum(gold)} in gold spans" if gold is not None else ""))
    return "\n".join(lines)


def save_heatmap(view: PolicyView, path: str, per_row: int = 16) -> str:
    """A grid of token boxes coloured by probability; masked tokens outlined. Returns path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--png needs matplotlib: pip install 'maskpolicy[plot]'") from None
    # Created like every other output's (the command line checked that it can be, up front).
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    rows = max(1, -(-len(view.tokens) // per_row))
    fig, ax = plt.subplots(figsize=(min(per_row, len(view.tokens)) * 0.9 + 1.5, rows * 0.6 + 0.9))
    cmap = plt.get_cmap("viridis")
    for i, (tok, p, m) in enumerate(zip(view.tokens, view.probs, view.masked)):
        r, c = divmod(i, per_row)
        ax.add_patch(plt.Rectangle((c, -r), 0.95, 0.9, color=cmap(p), ec="red" if m else "none", lw=2))
        ax.text(c + 0.47, -r + 0.45, tok, ha="center", va="center", fontsize=7,
                color="white" if p < 0.6 else "black")
    ax.set_xlim(-0.1, min(per_row, len(view.tokens)) + 0.1)
    ax.set_ylim(-rows + 0.8, 1.0)
    ax.axis("off")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax, fraction=0.03, label="mask probability")
    ax.set_title(f"{view.policy}: red outline = sampled mask (rate {view.rate})", fontsize=9)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path
