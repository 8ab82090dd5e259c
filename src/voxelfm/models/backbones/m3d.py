"""M3D-CLIP's image encoder: a MONAI-style 3D ViT (Bai et al., 2024, "M3D").

Facts from the original (``LaMed/src/model/multimodal_encoder/vit.py`` on MONAI 1.3 blocks):
linear ("perceptron") patch embedding of patches flattened in ``(p1 p2 p3 c)`` order, learned
position embedding added to the patch tokens only, a CLS token prepended after that, pre-norm
blocks ``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` with qkv split as ``(qkv, heads, d)``, exact
GELU, and a final LayerNorm. Parameter names follow the released ``pretrained_ViT.bin`` so its
state dict loads as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxelfm.core.errors import ConfigError
from voxelfm.core.geometry import Geometry
from voxelfm.models.backbones.base import ConfigMixin, NativeBackbone
from voxelfm.models.backbones.grid import patch_grid


@dataclass(frozen=True)
class M3DConfig(ConfigMixin):
    """Names as in the original ``ViT`` constructor; defaults are M3D-CLIP's."""

    in_channels: int = 1
    img_size: tuple[int, int, int] = (32, 256, 256)
    patch_size: tuple[int, int, int] = (4, 16, 16)
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if len(self.img_size) != 3 or len(self.patch_size) != 3 or any(
                i % p for i, p in zip(self.img_size, self.patch_size, strict=True)):
            raise ConfigError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(i // p for i, p in zip(self.img_size, self.patch_size, strict=True))  # type: ignore[return-value]


class _PatchEmbedding(nn.Module):
    def __init__(self, cfg: M3DConfig) -> None:
        super().__init__()
        n = cfg.grid[0] * cfg.grid[1] * cfg.grid[2]
        patch_dim = cfg.in_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
        # index 0 is the original's Rearrange layer (no parameters); kept so keys match
        self.patch_embeddings = nn.Sequential(nn.Identity(), nn.Linear(patch_dim, cfg.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, n, cfg.hidden_size))
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)
        self.patch_size = cfg.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        p1, p2, p3 = self.patch_size
        x = x.reshape(b, c, d // p1, p1, h // p2, p2, w // p3, p3)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (d // p1) * (h // p2) * (w // p3), p1 * p2 * p3 * c)
        return self.patch_embeddings(x) + self.position_embeddings


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))


class _Block(nn.Module):
    def __init__(self, cfg: M3DConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size)
        self.attn = _Attention(cfg.hidden_size, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(cfg.hidden_size)
        self.mlp = _Mlp(cfg.hidden_size, cfg.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class M3DViT(NativeBackbone):
    """M3D-CLIP vision encoder. Input ``(B, 1, 32, 256, 256)`` in [0, 1]; ``cls`` = normed token 0."""

    name = "m3d-clip"
    config_class = M3DConfig

    def __init__(self, config: M3DConfig) -> None:
        super().__init__(config)
        self.patch_embedding = _PatchEmbedding(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_size)

    @property
    def embed_dim(self) -> int:
        return int(self.config.hidden_size)

    def expected_input(self) -> tuple[int | None, ...]:
        return (self.config.in_channels, *self.config.img_size)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.patch_embedding(x)
        tokens = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens), dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return {"cls": tokens[:, 0], "patch": tokens[:, 1:].reshape(x.shape[0], *self.config.grid, -1)}

    def patch_geometry(self, input_geometry: Geometry, grid: tuple[int, int, int]) -> Geometry:
        return patch_grid(input_geometry, self.config.patch_size, grid)

    def describe(self) -> str:
        c = self.config
        return (f"M3D-CLIP 3D ViT (MONAI style): width {c.hidden_size}, {c.num_layers} blocks, {c.num_heads} heads, "
                f"MLP {c.mlp_dim}, patch {'x'.join(map(str, c.patch_size))}, input {c.in_channels}x"
                f"{'x'.join(map(str, c.img_size))}, learned position embedding, CLS token")


_ROOTS = ("cls_token", "patch_embedding.", "blocks.", "norm.")


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``pretrained_ViT.bin`` (bf16 plain ViT state dict) or the whole M3D-CLIP model (``vision_encoder.*``) → our keys."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = key
        for prefix in ("vision_encoder.", "model.vision_tower.vision_tower.", "vision_tower.vision_tower."):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name.startswith(_ROOTS):
            out[name] = value
    return out
