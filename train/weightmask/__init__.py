"""Weight masking (Zhao et al. 2020): a learned binary mask over frozen pretrained weights,
per task, instead of fine-tuning them.

- ``config``: ``WeightMaskConfig`` (which layers, tau, initial sparsity, learning rates);
- ``straight_through``: the ``W * 1[s > tau]`` parametrization and its gradient;
- ``layers``: attaching masks to the matching ``nn.Linear`` layers, statistics, baking;
- ``packing``: 1 bit per weight;
- ``artifact``: adapters on disk (packed mask + head + base fingerprint);
- ``bank``: many task masks on one shared backbone;
- ``interpolate``: accuracy along the line from a masked to a fine-tuned model.
"""
from .artifact import apply_adapter, load_adapted, read_adapter_config, save_adapter
from .config import DEFAULT_PATTERN, WeightMaskConfig
from .layers import (attach_fixed_masks, attach_score_masks, baked_copy, baked_state_dict, current_masks, masked_layers,
                     masked_share, matching_linears)
from .packing import pack_bits, unpack_bits
from .straight_through import FixedMask, ScoreMask, straight_through_mask

__all__ = ["DEFAULT_PATTERN", "FixedMask", "ScoreMask", "WeightMaskConfig", "apply_adapter", "attach_fixed_masks",
           "attach_score_masks", "baked_copy", "baked_state_dict", "current_masks", "load_adapted", "masked_layers",
           "masked_share", "matching_linears", "pack_bits", "read_adapter_config", "save_adapter",
           "straight_through_mask", "unpack_bits"]
