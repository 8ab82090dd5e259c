"""Building blocks of the 3D ViT: patch embedding, attention with RoPE, MLPs, LayerScale, drop path.

Module and parameter names follow the original state-dict layout (docs/original.md §1.7) so original
checkpoints load strictly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from voxelfm.models.rope import rotate_qk

# Token count above which inference runs the FFN branch in slices (memory, not speed: the
# slices are large enough that the matmuls stay efficient). Grids up to 20³ patches run unsliced.
FFN_CHUNK_TOKENS = 8192


class PatchEmbed3D(nn.Module):
    """``Conv3d(1 → C, kernel = stride = p)``; ``(B, D, H, W)`` → tokens ``(B, d·h·w, C)`` and grid."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not torch.is_grad_enabled():
            # CPU inference under bf16 autocast: oneDNN's bf16 kernel for this 1-channel, stride = kernel
            # convolution was ~18x slower than fp32 (0.62 vs 0.034 s at 512 patches, ViT-B), so it
            # runs in fp32 (also exact). Training keeps autocast's choice, so its numerics are unchanged.
            with torch.autocast("cpu", enabled=False):
                x = self.proj(x.float().unsqueeze(1))
        else:
            x = self.proj(x.unsqueeze(1))  # (B, C, d, h, w)
        grid = tuple(int(s) for s in x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid  # (d h w) row-major: z slowest, x fastest


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``; RoPE on patch q/k only."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                num_special: int) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)  # rows of qkv are [q | k | v]
        if rope is not None:
            # On the fused projection, before the heads are split: q and k in one pass (rope.rotate_qk).
            qkv = rotate_qk(qkv, *rope, num_special)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, head_dim)
        # SDPA scales by head_dim ** -0.5 after RoPE, as the original does; memory stays linear in N.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """``fc1 → GELU (exact) → fc2``."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """``w12`` (C → 2·hidden) → SiLU(x1)·x2 → ``w3``; hidden = ⅔·(mlp_ratio·C) rounded up to 8 (DINOv2 rule)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    """Learnable per-channel scale ``gamma`` (init ``init_values``)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Per-sample stochastic depth: zero the branch of a random subset of samples, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: ``x + LS1(Attn(LN1 x))``, then ``x + LS2(FFN(LN2 x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, layerscale: float | None,
                 drop_path_rate: float, ffn_layer: str, qkv_bias: bool, proj_bias: bool,
                 ffn_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ls1: nn.Module = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        hidden = int(dim * mlp_ratio)
        if ffn_layer == "mlp":
            self.mlp: nn.Module = Mlp(dim, hidden, bias=ffn_bias)
        elif ffn_layer == "swiglu":
            self.mlp = SwiGLUFFN(dim, hidden, bias=ffn_bias)
        else:
            self.mlp = nn.Identity()
        self.ls2: nn.Module = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                num_special: int) -> torch.Tensor:
        def attn_branch(t: torch.Tensor) -> torch.Tensor:
            return self.ls1(self.attn(self.norm1(t), rope, num_special))

        def ffn_branch(t: torch.Tensor) -> torch.Tensor:
            return self.ls2(self.mlp(self.norm2(t)))

        rate = self.drop_path_rate
        if not self.training and not torch.is_grad_enabled() and x.shape[1] > FFN_CHUNK_TOKENS:
            # Inference on a large grid: the FFN's 4C-wide hidden activations dominate peak memory
            # (about 0.7 GB at 25,000 tokens for C = 864), so run this per-token branch in slices.
            x = x + attn_branch(x)
            return _chunked_residual(x, ffn_branch, FFN_CHUNK_TOKENS)
        if self.training and rate > 0.1:
            # DINOv2 trick for high rates: run the branch on a random subset of the batch only.
            x = _subset_residual(x, attn_branch, rate)
            x = _subset_residual(x, ffn_branch, rate)
        else:
            x = x + drop_path(attn_branch(x), rate, self.training)
            x = x + drop_path(ffn_branch(x), rate, self.training)
        return x


def _chunked_residual(x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                      chunk: int) -> torch.Tensor:
    """``x + branch(x)`` for a per-token ``branch``, computed over slices of ``chunk`` tokens."""
    out = torch.empty_like(x)
    for start in range(0, x.shape[1], chunk):
        part = x[:, start:start + chunk]
        out[:, start:start + chunk] = part + branch(part)
    return out


def _subset_residual(x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                     rate: float) -> torch.Tensor:
    """Add ``branch`` on ``max(1, ⌊B·(1 − rate)⌋)`` random samples, scaled by ``B / subset``."""
    b = x.shape[0]
    subset = max(int(b * (1.0 - rate)), 1)
    idx = torch.randperm(b, device=x.device)[:subset]
    residual = branch(x[idx]).to(x.dtype)
    return torch.index_add(x, 0, idx, residual, alpha=b / subset)
