"""Shared helpers for the model tests: small configs and weights that make every block matter."""

from __future__ import annotations

import torch

from synthetic_ct import smooth_volume
from voxelfm.models import ViTConfig

__all__ = ["SMALL", "perturb_", "smooth_volume"]

# 2 heads × head_dim 24 (3 axes × 4 pairs), patch 4, 2 registers: fast, but every part exercised.
SMALL = ViTConfig(embed_dim=48, depth=2, num_heads=2, patch_size=4, num_register_tokens=2)


def perturb_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every tensor non-trivial values (LayerScale ~0.5, random LN affine, biases, tokens).

    With LayerScale at its 1e-5 init the blocks barely change the tokens, which would hide errors.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("periods"):
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("gamma"):
                tensor.copy_(0.5 + 0.1 * noise)
            elif "norm" in name and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * noise)
            elif name.endswith("qkv.weight"):
                tensor.copy_(0.25 * noise)  # large enough q·k that attention is far from uniform
            elif name.endswith("bias") or "token" in name:
                tensor.copy_(0.1 * noise)
            else:
                tensor.copy_(noise * tensor.std().clamp_min(0.02))
    return model
