"""Binary masks as packed bits: 8 weights per uint8, most significant bit first.

A bool mask of n entries becomes ceil(n / 8) bytes (1/32 of the fp32 weight it masks);
the shape is stored beside it, so unpacking drops the padding bits of the last byte.
"""
from __future__ import annotations

import math

import torch

_BIT_VALUES = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool tensor of any shape -> uint8 [ceil(numel / 8)]."""
    flat = mask.detach().reshape(-1).to(torch.uint8)
    padded = torch.zeros(math.ceil(flat.numel() / 8) * 8, dtype=torch.uint8, device=flat.device)
    padded[: flat.numel()] = flat
    # [bytes, 8] bits times their values, summed: each row's byte (fits in uint8: at most 255)
    return (padded.view(-1, 8) * _BIT_VALUES.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """uint8 [ceil(numel / 8)] -> bool tensor of ``shape``."""
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != math.ceil(numel / 8):
        raise ValueError(f"packed mask of {packed.numel()} {packed.dtype} entries does not hold a {tuple(shape)} mask")
    bits = (packed.unsqueeze(1) & _BIT_VALUES.to(packed.device)) != 0  # [bytes, 8]
    return bits.reshape(-1)[:numel].reshape(shape)
