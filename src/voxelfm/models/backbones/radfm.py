"""RadFM's vision encoder: a 3D ViT without CLS token or final norm (Wu et al., 2023, "RadFM").

Facts from the original (``Model/RadFM/vit_3d.py``, ``position_encoding.py``, built in
``my_embedding_layer.py``): input ``(B, C, H, W, D)``; patches flattened ``(p1 p2 pf c)`` then
LayerNorm → Linear → LayerNorm; a learned factorised 3D position embedding (row, column, depth
tables of ``dim // 3`` each, concatenated) whose indices are *stretched* to the table size,
``(arange(n) + 1) * (table // n) - 1``; pre-norm blocks with bias-free qkv and exact GELU; no
final norm. Tokens are ordered ``(h w f)``. The global vector is the mean of the tokens (the
original hands the tokens to a Perceiver; the paper's pooling is not public).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from voxelfm.core.errors import ConfigError, InputValidationError
from voxelfm.core.geometry import Geometry
from voxelfm.models.backbones.base import ConfigMixin, NativeBackbone, keys_under
from voxelfm.models.backbones.grid import patch_grid


@dataclass(frozen=True)
class RadFMConfig(ConfigMixin):
    """Names as in the original ``ViT`` constructor; defaults are RadFM's (``MyEmbedding``)."""

    image_size: int = 512
    image_patch_size: int = 32
    frames: int = 512
    frame_patch_size: int = 4
    dim: int = 768
    depth: int = 12
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 2048
    channels: int = 3

    def __post_init__(self) -> None:
        if self.image_size % self.image_patch_size or self.frames % self.frame_patch_size:
            raise ConfigError("image_size/frames must be multiples of image_patch_size/frame_patch_size")
        if self.dim % 3:
            raise ConfigError(f"dim {self.dim} must be divisible by 3 (factorised position embedding)")


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        # the original drops the output projection only when heads == 1 and dim_head == dim
        self.project = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0)) if self.project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Transformer(nn.Module):
    def __init__(self, cfg: RadFMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([_PreNorm(cfg.dim, _Attention(cfg.dim, cfg.heads, cfg.dim_head)),
                           _PreNorm(cfg.dim, _FeedForward(cfg.dim, cfg.mlp_dim))])
            for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:  # type: ignore[misc]
            x = attn(x) + x
            x = ff(x) + x
        return x


class _PositionEmbedding3d(nn.Module):
    def __init__(self, feats: int, h: int, w: int, d: int) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(h, feats)
        self.col_embed = nn.Embedding(w, feats)
        self.dep_embed = nn.Embedding(d, feats)
        for table in (self.row_embed, self.col_embed, self.dep_embed):
            nn.init.uniform_(table.weight)

    @staticmethod
    def _stretched(table: nn.Embedding, n: int, device: torch.device) -> torch.Tensor:
        size = table.num_embeddings
        return table((torch.arange(n, device=device) + 1) * (size // n) - 1)

    def forward(self, h: int, w: int, d: int, device: torch.device) -> torch.Tensor:
        rows = self._stretched(self.row_embed, h, device)[:, None, None].expand(h, w, d, -1)
        cols = self._stretched(self.col_embed, w, device)[None, :, None].expand(h, w, d, -1)
        deps = self._stretched(self.dep_embed, d, device)[None, None, :].expand(h, w, d, -1)
        return torch.cat((rows, cols, deps), dim=-1).reshape(1, h * w * d, -1)


class RadFMViT(NativeBackbone):
    """RadFM vision encoder. Input ``(B, 3, 512, 512, D)`` in [0, 1], D a multiple of 4 up to 64."""

    name = "radfm"
    config_class = RadFMConfig

    def __init__(self, config: RadFMConfig) -> None:
        super().__init__(config)
        c = config
        patch_dim = c.channels * c.image_patch_size ** 2 * c.frame_patch_size
        # index 0 is the original's Rearrange layer (no parameters); kept so keys match
        self.to_patch_embedding = nn.Sequential(nn.Identity(), nn.LayerNorm(patch_dim), nn.Linear(patch_dim, c.dim),
                                                nn.LayerNorm(c.dim))
        n_hw = c.image_size // c.image_patch_size
        self.pos_embedding = _PositionEmbedding3d(c.dim // 3, n_hw, n_hw, c.frames // c.frame_patch_size)
        self.transformer = _Transformer(c)

    @property
    def embed_dim(self) -> int:
        return int(self.config.dim)

    def expected_input(self) -> tuple[int | None, ...]:
        return (self.config.channels, None, None, None)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        c = self.config
        h, w, d = x.shape[2:]
        p, f = c.image_patch_size, c.frame_patch_size
        if h % p or w % p or d % f or h > c.image_size or w > c.image_size or d > c.frames or d < f:
            raise InputValidationError(
                f"radfm input (H, W, D) = {(h, w, d)} must be multiples of ({p}, {p}, {f}) within "
                f"({c.image_size}, {c.image_size}, {c.frames})")

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        b, ch, h, w, d = x.shape
        p, f = c.image_patch_size, c.frame_patch_size
        gh, gw, gd = h // p, w // p, d // f
        patches = x.reshape(b, ch, gh, p, gw, p, gd, f).permute(0, 2, 4, 6, 3, 5, 7, 1)
        tokens = self.to_patch_embedding(patches.reshape(b, gh * gw * gd, p * p * f * ch))
        tokens = tokens + self.pos_embedding(gh, gw, gd, x.device).to(tokens.dtype)
        tokens = self.transformer(tokens)
        return {"cls": tokens.mean(dim=1), "patch": tokens.reshape(b, gh, gw, gd, -1)}

    def patch_geometry(self, input_geometry: Geometry, grid: tuple[int, int, int]) -> Geometry:
        c = self.config
        return patch_grid(input_geometry, (c.image_patch_size, c.image_patch_size, c.frame_patch_size), grid)

    def describe(self) -> str:
        c = self.config
        return (f"RadFM 3D ViT: width {c.dim}, {c.depth} blocks, {c.heads} heads x {c.dim_head}, MLP {c.mlp_dim}, "
                f"patch {c.image_patch_size}x{c.image_patch_size}x{c.frame_patch_size}, {c.channels} channels, "
                "learned factorised position embedding, no CLS/final norm (global = token mean)")


_ROOTS = ("to_patch_embedding.", "pos_embedding.", "transformer.")


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """RadFM's ``pytorch_model.bin`` (whole model) or a bare ViT state dict → the vision encoder's keys."""
    return keys_under(state, "vision_encoder.", _ROOTS)
