"""3D rotary position embedding on patch tokens (docs/original.md §1.5).

Each head's ``head_dim`` channels are split into three contiguous thirds (z, y, x); inside a
third, channels form interleaved pairs ``(2i, 2i + 1)`` rotated by ``θ = 2π c / period_i`` with
``period_i = base ** (2 i / (head_dim / 3))`` and ``c = 2 (k + 0.5) / n - 1`` the patch centre
normalised by that axis's own patch count ``n``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_periods(head_dim: int, base: float) -> torch.Tensor:
    """``base ** (2 i / (head_dim / 3))`` for ``i = 0 .. head_dim / 6 - 1`` (float32)."""
    n_pairs = head_dim // 6
    exponent = 2.0 * torch.arange(n_pairs, dtype=torch.float64) / (head_dim / 3)
    return (base**exponent).to(torch.float32)


def patch_coords(grid: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """Normalised (z, y, x) centre of every patch, ``(d·h·w, 3)`` in (d h w) row-major order."""
    axes = [(torch.arange(n, device=device, dtype=torch.float32) + 0.5) * (2.0 / n) - 1.0 for n in grid]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([zz, yy, xx], dim=-1).reshape(-1, 3)


class RopePositionEmbedding3D(nn.Module):
    """Computes the ``(sin, cos)`` tables, each ``(N, 3, head_dim/6)`` float32, for a patch grid."""

    def __init__(self, head_dim: int, base: float = 100.0, rescale_coords: float | None = None) -> None:
        super().__init__()
        if head_dim % 6 != 0:
            raise ValueError(f"head_dim {head_dim} must be divisible by 6 for 3D RoPE")
        self.head_dim = head_dim
        self.base = float(base)
        self.rescale_coords = rescale_coords
        # Persistent: original checkpoints carry it and strict loading expects it.
        self.register_buffer("periods", rope_periods(head_dim, base), persistent=True)

    def forward(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        coords = patch_coords(grid, device=self.periods.device)
        if self.training and self.rescale_coords is not None and self.rescale_coords > 1.0:
            # One log-uniform factor per forward pass, as in the original augmentation.
            log_s = math.log(self.rescale_coords)
            factor = torch.empty((), device=coords.device).uniform_(-log_s, log_s).exp()
            coords = coords * factor
        # Reduce modulo one turn before multiplying by 2π, keeping the angle precise in float32.
        turns = torch.remainder(coords[:, :, None] / self.periods.float()[None, None, :], 1.0)
        angles = 2.0 * math.pi * turns
        return torch.sin(angles), torch.cos(angles)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., N, head_dim) with tables (N, 3, head_dim/6): thirds per axis, interleaved pairs."""
    *lead, n, head_dim = x.shape
    pairs = x.reshape(*lead, n, 3, head_dim // 6, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    sin = sin.to(x.dtype)
    cos = cos.to(x.dtype)
    rotated = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return rotated.reshape(*lead, n, head_dim)


def rotate_qk(qkv: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, num_special: int) -> torch.Tensor:
    """RoPE on the patch rows of q and k inside the fused projection ``qkv`` (B, N, 3, heads, head_dim).

    The same rotation as :func:`apply_rope`, written as one complex multiplication: each interleaved
    channel pair ``(a, b)`` is the complex number ``a + ib`` and is multiplied by ``cos θ + i sin θ``
    (the tables' ``(N, 3, head_dim/6)`` layout is exactly the order of the pairs along ``head_dim``).
    Under inference the product is written back into ``qkv`` (float32 in place; other dtypes computed
    in float32 and rounded once), so q and k need no per-row slicing, stacking or concatenation; with
    autograd it is computed out of place. Returns ``qkv`` (the same tensor under inference).
    """
    turn = torch.complex(cos.float(), sin.float()).reshape(cos.shape[0], 1, 1, -1)  # (Np, 1, 1, head_dim/2)
    patches = qkv[:, num_special:, :2]  # (B, Np, 2 = q|k, heads, head_dim)
    if not (torch.is_grad_enabled() and qkv.requires_grad):
        if qkv.dtype == torch.float32:
            torch.view_as_complex(patches.unflatten(-1, (-1, 2))).mul_(turn)
        else:
            work = patches.float()
            torch.view_as_complex(work.unflatten(-1, (-1, 2))).mul_(turn)
            patches.copy_(work)
        return qkv
    rotated = torch.view_as_real(torch.view_as_complex(patches.float().unflatten(-1, (-1, 2))) * turn)
    rows = torch.cat((rotated.flatten(-2).to(qkv.dtype), qkv[:, num_special:, 2:]), dim=2)
    return torch.cat((qkv[:, :num_special], rows), dim=1)
