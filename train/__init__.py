"""Loops on accelerate: general and intermediate MLM pre-training driven by a policy,
fine-tuning and evaluation, atomic checkpoints."""
from .config import FinetuneConfig, PretrainConfig
from .models import PRESETS

__all__ = ["FinetuneConfig", "PretrainConfig", "PRESETS"]
