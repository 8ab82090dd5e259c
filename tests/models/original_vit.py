"""An independent re-statement of the ORIGINAL VoxelFM backbone forward pass (docs/original.md §1.2–1.5).

Written from the formulas only, on a plain state dict, sharing no code with ``voxelfm.models``:

* patches cut with reshape/permute (not Conv3d) and projected with a matmul;
* tokens ``[CLS, registers, patches]``; patches in (z, y, x) row-major order;
* RoPE tables built with explicit Python loops in float64 (``period_i = base^(2i/(hd/3))``,
  ``c = 2(k + 0.5)/n - 1``, ``θ = 2π c / period``), applied per axis third to interleaved pairs
  of patch q/k only;
* eager attention that materialises the full ``(B, heads, T, T)`` matrix in fp32, q scaled by
  ``head_dim^-0.5`` after the rotation (the original's memory behaviour).

Used by the parity tests (tests/models) and as the baseline of benchmarks/bench_backbone.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F


def rope_tables(grid: tuple[int, int, int], head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """sin/cos tables ``(N, 3, head_dim/6)`` built patch by patch, axis by axis, pair by pair."""
    n_pairs = head_dim // 6
    third = head_dim / 3
    periods = [base ** (2 * i / third) for i in range(n_pairs)]
    d, h, w = grid
    sin_rows, cos_rows = [], []
    for kz in range(d):
        for ky in range(h):
            for kx in range(w):
                coords = (2 * (kz + 0.5) / d - 1, 2 * (ky + 0.5) / h - 1, 2 * (kx + 0.5) / w - 1)
                s_axes, c_axes = [], []
                for c in coords:
                    angles = [2 * math.pi * c / period for period in periods]
                    s_axes.append([math.sin(a) for a in angles])
                    c_axes.append([math.cos(a) for a in angles])
                sin_rows.append(s_axes)
                cos_rows.append(c_axes)
    return torch.tensor(sin_rows, dtype=torch.float32), torch.tensor(cos_rows, dtype=torch.float32)


def rotate(t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, N, hd): third ``a`` of each head ↔ axis a, pairs (2i, 2i+1) inside it."""
    out = t.clone()
    third = t.shape[-1] // 3
    for axis in range(3):
        lo = axis * third
        even = t[..., lo:lo + third:2]
        odd = t[..., lo + 1:lo + third:2]
        s, c = sin[:, axis, :], cos[:, axis, :]
        out[..., lo:lo + third:2] = even * c - odd * s
        out[..., lo + 1:lo + third:2] = even * s + odd * c
    return out


def original_forward(state: Mapping[str, torch.Tensor], x: torch.Tensor, *, num_heads: int,
                     rope_base: float = 100.0, tables: tuple[torch.Tensor, torch.Tensor] | None = None,
                     ) -> dict[str, torch.Tensor]:
    """Forward of the original backbone from its state dict (no ``backbone.`` prefix); fp32, no grad."""
    weight = state["patch_embed.proj.weight"]  # (C, 1, p, p, p)
    c, p = weight.shape[0], weight.shape[-1]
    b, dd, hh, ww = x.shape
    d, h, w = dd // p, hh // p, ww // p
    x = x[:, :d * p, :h * p, :w * p]
    cubes = x.reshape(b, d, p, h, p, w, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, d * h * w, p ** 3)
    patches = cubes @ weight.reshape(c, -1).T + state["patch_embed.proj.bias"]
    regs = state["register_tokens"]
    seq = torch.cat([state["cls_token"].expand(b, -1, -1), regs.expand(b, -1, -1), patches], dim=1)
    n_special = 1 + regs.shape[1]
    head_dim = c // num_heads
    sin, cos = tables if tables is not None else rope_tables((d, h, w), head_dim, rope_base)
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(depth):
        pre = f"blocks.{i}."
        y = F.layer_norm(seq, (c,), state[pre + "norm1.weight"], state[pre + "norm1.bias"], eps=1e-5)
        qkv = F.linear(y, state[pre + "attn.qkv.weight"], state[pre + "attn.qkv.bias"])
        q, k, v = (t.reshape(b, -1, num_heads, head_dim).transpose(1, 2) for t in qkv.split(c, dim=-1))
        q = torch.cat([q[:, :, :n_special], rotate(q[:, :, n_special:], sin, cos)], dim=2)
        k = torch.cat([k[:, :, :n_special], rotate(k[:, :, n_special:], sin, cos)], dim=2)
        q = q * head_dim ** -0.5
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)  # the full (B, heads, T, T) matrix
        out = (attn @ v).transpose(1, 2).reshape(b, -1, c)
        out = F.linear(out, state[pre + "attn.proj.weight"], state[pre + "attn.proj.bias"])
        seq = seq + state[pre + "ls1.gamma"] * out
        y = F.layer_norm(seq, (c,), state[pre + "norm2.weight"], state[pre + "norm2.bias"], eps=1e-5)
        y = F.linear(y, state[pre + "mlp.fc1.weight"], state[pre + "mlp.fc1.bias"])
        y = 0.5 * y * (1.0 + torch.erf(y / math.sqrt(2.0)))  # exact GELU
        y = F.linear(y, state[pre + "mlp.fc2.weight"], state[pre + "mlp.fc2.bias"])
        seq = seq + state[pre + "ls2.gamma"] * y
    normed = F.layer_norm(seq, (c,), state["norm.weight"], state["norm.bias"], eps=1e-5)
    return {
        "x_norm_clstoken": normed[:, 0],
        "x_norm_regtokens": normed[:, 1:n_special],
        "x_norm_patchtokens": normed[:, n_special:],
        "x_prenorm": seq,
    }


def attention_matrix_bytes(n_tokens: int, num_heads: int, batch: int = 1, itemsize: int = 4) -> int:
    """Bytes of one materialised attention matrix ``(B, heads, T, T)`` (T includes CLS + registers)."""
    return batch * num_heads * n_tokens * n_tokens * itemsize
