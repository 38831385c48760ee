"""Which tokens to mask: the policy interface, heuristics, the exact-budget sampler,
80/10/10 corruption and the Hugging Face-style collator.

    from maskpolicy.policies import get_policy, MaskingCollator
    collator = MaskingCollator(tokenizer, policy="span", mlm_probability=0.15)
"""
from . import heuristics  # noqa: F401  (registers the heuristic policies)
from .base import MaskingPolicy, merge_units
from .collator import MaskingCollator
from .corruption import CorruptionConfig, corrupt
from .errors import ArtifactError, ConfigError, DataError, MaskpolicyError
from .masker import MODEL_KEYS, Masker, MaskingConfig
from .network import LearnedPolicy  # registers 'learned' and the saved-policy directory loader
from .registry import available_policies, get_policy, policy_class, register_policy
from .sampler import mask_budget, sample_mask
from .vocab import VocabInfo

__all__ = [
    "ArtifactError", "ConfigError", "CorruptionConfig", "DataError", "LearnedPolicy", "MODEL_KEYS", "Masker",
    "MaskingCollator", "MaskingConfig", "MaskingPolicy", "MaskpolicyError", "VocabInfo",
    "available_policies", "corrupt", "get_policy", "mask_budget", "merge_units", "policy_class",
    "register_policy", "sample_mask",
]
