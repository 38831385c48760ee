"""``MaskingCollator``: a drop-in for ``transformers.DataCollatorForLanguageModeling``."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .base import MaskingPolicy
from .collate_io import Collated, Padding, WorkerGenerators, check_format, collate, stack_examples, word_ids_from_offsets
from .corruption import CorruptionConfig
from .errors import ConfigError
from .heuristics.whole_word import WholeWordPolicy
from .masker import MODEL_KEYS, Masker, MaskingConfig
from .registry import get_policy


class MaskingCollator:
    """Masked-LM batches from any masking policy, as ``DataCollatorForLanguageModeling`` makes them.

    Same arguments (``mlm``, ``mlm_probability``, ``mask_replace_prob``,
    ``random_replace_prob``, ``pad_to_multiple_of``, ``whole_word_mask``, ``seed``,
    ``return_tensors`` "pt" or "np", also per call: ``collator(features, return_tensors="np")``),
    same output keys and dtypes (``input_ids``, ``attention_mask``, ``token_type_ids`` when
    given, ``labels`` with -100 where not masked, and per-example keys such as
    ``next_sentence_label`` / ``sentence_order_label`` passed through), usable as
    ``data_collator=`` in a ``Trainer`` or ``collate_fn=`` in any ``DataLoader``. Examples may
    be dicts of lists, numpy arrays or tensors, or bare id sequences. Like HF: a ``labels``
    field in the examples is overwritten; ``special_tokens_mask`` and ``offset_mapping`` are
    used and not returned; rows with nothing to mask (``[CLS] [SEP]``, empty ``input_ids``) get
    all -100 labels; a tokenizer needs a mask token only for ``mlm=True`` and a pad token only
    when a batch needs padding; ``mlm=False`` gives ``labels = input_ids`` with -100 wherever
    the token is the pad id (when the tokenizer has one), as HF does.

    What it adds: any masking ``policy``; an exact per-sequence budget (``fill``: ``"none"``
    masks only the tokens a policy selects, which for ``random`` and the other uniform
    heuristics is the whole budget; ``"ranking"``/``"random"`` fill it, see ``sampler.py``;
    ``None``, the default, takes the fill a learned policy was validated with, else
    ``"none"``); policy extras (per-token keys such as ``word_ids``, ``span_ids``) carried
    through padding and consumed by the policy, never handed to the model; ``collator.pad``
    (padding only, per-token keys, ``labels`` padded with -100).

    ``whole_word_mask=True`` is HF's flag: words from ``offset_mapping`` (a token continues a
    word when it starts where the previous one ends), every masked token replaced by [MASK]
    (HF forces ``mask_replace_prob=1, random_replace_prob=0`` and warns; so do we). The
    ``whole_word`` *policy* (``policy="whole_word"``) keeps whole words too but applies the
    configured 80/10/10 per token, and takes words from ``word_ids`` or the vocabulary's "##"
    marks unless ``offset_mapping`` is given.

    Differences from DataCollatorForLanguageModeling (deliberate):
    - exact budget: each row gets ``round(mlm_probability * maskable)`` masks (at least one when
      anything is maskable) instead of an independent coin per token, so ``mlm_probability``
      must lie in (0, 1) (HF also takes 0 and 1); with ``whole_word_mask`` the token budget is
      filled with whole words (HF: a coin per word), which leans a little to short words;
    - random replacements are never special tokens (HF draws from the whole vocabulary, [PAD]
      and [CLS] included); a vocabulary with no ordinary token is refused at construction when
      ``random_replace_prob > 0``; special tokens are never masked, whatever a given
      ``special_tokens_mask`` says (HF trusts the mask alone);
    - per-token keys the collator does not know (one entry per token) are padded and treated
      as policy extras, not returned; HF returns them when every example has the same length
      and raises otherwise (a per-example array as long as every example is counts as
      per-token); strings are dropped with "pt" (HF raises) and returned with "np";
    - bare id sequences also get an ``attention_mask`` (HF returns only input_ids and labels,
      so its padding is attended to);
    - a tokenizer without a pad token fails only when a batch needs padding (HF's dict path
      fails on every batch); the error is a ``ConfigError`` (a ``ValueError``, as in HF);
    - ``whole_word_mask=True`` without ``offset_mapping`` takes words from the vocabulary
      (HF fails), works with examples of different lengths (HF cannot pad offsets), and cannot
      be combined with another policy than ``random``/``whole_word``;
    - ``return_tensors="tf"`` is refused with a ``ConfigError`` (at construction or call);
      HF's ``torch_mask_tokens``/``numpy_mask_tokens`` helpers are not provided;
    - per-worker seeds are ``seed + worker id + 1`` (HF: ``seed + worker id``).
    """

    def __init__(
        self,
        tokenizer,
        policy: str | MaskingPolicy = "random",
        *,
        mlm: bool = True,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        whole_word_mask: bool = False,
        deterministic: bool = False,
        fill: str | None = None,
        seed: int | None = None,
        return_tensors: str = "pt",
        policy_options: dict | None = None,
    ) -> None:
        if tokenizer is None:
            raise ConfigError("MaskingCollator needs a tokenizer")
        self.return_tensors = check_format(return_tensors)
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ConfigError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
        CorruptionConfig(mask_replace_prob, random_replace_prob)  # checked with mlm=False too, as HF does
        if whole_word_mask:
            if not mlm:
                raise ConfigError("whole_word_mask=True needs mlm=True")
            if not (policy in ("random", "whole_word") or isinstance(policy, WholeWordPolicy)):
                raise ConfigError(f"whole_word_mask=True is HF's whole-word masking; it cannot be combined with policy {policy!r}")
            policy = policy if isinstance(policy, WholeWordPolicy) else "whole_word"
            if mask_replace_prob < 1:
                warnings.warn("whole_word_mask=True replaces every masked token with [MASK] (as HF): "
                              "mask_replace_prob set to 1, random_replace_prob to 0", UserWarning, stacklevel=2)
                mask_replace_prob, random_replace_prob = 1.0, 0.0
        self.tokenizer = tokenizer
        self.mlm = mlm
        self.whole_word_mask = whole_word_mask
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = float(mask_replace_prob)
        self.random_replace_prob = float(random_replace_prob)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.policy: MaskingPolicy | None = None
        self.config: MaskingConfig | None = None
        self.masker: Masker | None = None
        if mlm:
            if tokenizer.mask_token_id is None:
                raise ConfigError("the tokenizer has no mask token, which masked LM needs; pass mlm=False for causal LM")
            self.policy = get_policy(policy, tokenizer, **(policy_options or {}))
            self.config = MaskingConfig(rate=mlm_probability, mask_replace_prob=self.mask_replace_prob,
                                        random_replace_prob=self.random_replace_prob, deterministic=deterministic,
                                        fill=fill)
            self.masker = Masker(self.policy, self.config, allow_empty_rows=True)
        elif policy != "random" or policy_options:
            raise ConfigError("mlm=False makes causal-LM labels; a masking policy has no effect there")
        self._generators = WorkerGenerators(seed)

    # ---- padding ---------------------------------------------------------------------
    @property
    def padding(self) -> Padding:
        """Read from the tokenizer at every call (HF does too: padding_side may change)."""
        tok = self.tokenizer
        return Padding(pad_id=tok.pad_token_id, token_type_pad=int(getattr(tok, "pad_token_type_id", 0) or 0),
                       left=getattr(tok, "padding_side", "right") == "left", multiple=self.pad_to_multiple_of)

    def pad(self, features: Sequence) -> dict[str, torch.Tensor]:
        """Pad examples (dicts or bare id sequences) to [B, T]: per-token keys only
        (``labels`` with -100, policy extras with -1); per-example keys are left out."""
        return collate(features, self.padding).tokens

    # ---- masking ---------------------------------------------------------------------
    @property
    def generator(self) -> torch.Generator | None:
        """Seeded generator; each DataLoader worker gets its own stream (seed + worker id + 1)."""
        return self._generators.current()

    def __call__(self, features: Sequence, return_tensors: str | None = None) -> dict:
        fmt = check_format(return_tensors or self.return_tensors)
        batch = collate(features, self.padding, skip=("labels",))  # incoming labels are overwritten, as in HF
        out = self._mask(batch) if self.mlm else self._causal(batch)
        for key, values in batch.examples.items():
            out[key] = stack_examples(key, values, fmt)
        if fmt == "np":
            out = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
            out.update({k: np.asarray(v) for k, v in batch.texts.items()})  # strings: as HF's "np"
        return out

    def _mask(self, batch: Collated) -> dict[str, torch.Tensor]:
        tokens = dict(batch.tokens)
        ids = tokens["input_ids"]  # [B, T]
        offsets = tokens.pop("offset_mapping", None)  # [B, T, 2]
        if offsets is not None and "word_ids" not in tokens:
            maskable = self.policy.maskable(ids, tokens["attention_mask"], tokens.get("special_tokens_mask"))
            tokens["word_ids"] = word_ids_from_offsets(offsets.long(), maskable)
        if ids.shape[1] == 0:  # every example empty: nothing to mask
            return {k: v for k, v in tokens.items() if k in MODEL_KEYS} | {"labels": ids.clone()}
        return self.masker(tokens, generator=self.generator)

    def _causal(self, batch: Collated) -> dict[str, torch.Tensor]:
        # HF's causal-LM convention: labels = inputs, -100 wherever the token is the pad id
        # (also real tokens equal to it, e.g. an eos used as pad), nothing when there is no pad id.
        out = {k: v for k, v in batch.tokens.items() if k in MODEL_KEYS}
        labels = out["input_ids"].clone()
        if self.tokenizer.pad_token_id is not None:
            labels[labels == self.tokenizer.pad_token_id] = -100
        out["labels"] = labels
        return out

    def __repr__(self) -> str:
        if not self.mlm:
            return f"MaskingCollator(mlm=False, pad_to_multiple_of={self.pad_to_multiple_of})"
        return f"MaskingCollator(policy={self.policy!r}, config={self.config})"
