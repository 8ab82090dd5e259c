"""CT-CLIP's image encoder: the CTViT encoder, VQ codebook and visual latent (Hamamci et al., 2024).

Written from the paper and from facts read in the original (``transformer_maskgit/ctvit.py``,
``attention.py``, ``CT_CLIP/ct_clip/ct_clip.py``, vector-quantize-pytorch 1.1.2); no code is
shared with it. Facts:

* input ``(B, 1, T, H, W)``; patches ``(c pt p1 p2)`` → LayerNorm → Linear → LayerNorm, giving a
  ``(B, t, h, w, dim)`` token grid;
* a *spatial* transformer over the ``h·w`` tokens of each depth slab with a continuous position
  bias (an MLP of ``sign(Δ)·log(|Δ|+1)`` of 2D offsets: Linear(2, dim), LeakyReLU 0.1,
  Linear(dim, dim), LeakyReLU 0.1, Linear(dim, heads)); then a *temporal* transformer over the
  ``t`` tokens of each position; both end with a LayerNorm (bias held as a zero buffer);
* every layer: PEG (depthwise 3³ conv on the token grid, zero padding, two frames before and none
  after on the depth axis) added to x; attention whose q comes from LayerNorm(x) but k, v from
  the *un-normalised* x, q and k L2-normalised and scaled by learned per-dim gains, logits ×8;
  GEGLU feed-forward (LayerNorm → Linear(dim, 2·int(8·dim/3)) → x·GELU(gate) → Linear);
* the PEG reshapes its ``(B·n, L, dim)`` input to the *video* shape ``(B, t, h, w)`` without
  transposing first. In the temporal transformer the memory order is ``(B h w) t``, so its PEG
  convolves a scrambled grid; we reproduce this exactly;
* the encoded tokens are quantised by a cosine-similarity codebook: the nearest code by cosine
  (argmax of ``l2norm(x)·l2norm(E)ᵀ``) replaces each token by the *stored* code vector;
* the CLIP image latent: the quantised tokens averaged over depth, flattened ``(h w dim)``,
  projected by ``to_visual_latent`` (no bias) and L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxelfm.core.errors import CheckpointError, ConfigError
from voxelfm.core.geometry import Geometry
from voxelfm.models.backbones.base import ConfigMixin, NativeBackbone
from voxelfm.models.backbones.grid import patch_grid


@dataclass(frozen=True)
class CTCLIPConfig(ConfigMixin):
    """Names as in the original ``CTViT``/``CTCLIP`` constructors; defaults are CT-CLIP's (run_zero_shot.py)."""

    dim: int = 512
    codebook_size: int = 8192
    image_size: int = 480
    patch_size: int = 20
    temporal_patch_size: int = 10
    frames: int = 240
    spatial_depth: int = 4
    temporal_depth: int = 4
    dim_head: int = 32
    heads: int = 8
    channels: int = 1
    dim_latent: int = 512
    quantize: bool = True

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size or self.frames % self.temporal_patch_size:
            raise ConfigError("image_size/frames must be multiples of patch_size/temporal_patch_size")

    @property
    def grid(self) -> tuple[int, int, int]:
        n = self.image_size // self.patch_size
        return (self.frames // self.temporal_patch_size, n, n)

    @property
    def dim_image(self) -> int:
        """Input width of ``to_visual_latent``: ``h · w · dim`` (294,912 for CT-CLIP)."""
        return self.grid[1] * self.grid[2] * self.dim


class _BufferLayerNorm(nn.Module):
    """LayerNorm with a learned gain and a fixed zero bias (buffer), as in the original."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class _PEG(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dsconv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor, video_shape: tuple[int, int, int, int]) -> torch.Tensor:
        shape = x.shape
        grid = x.reshape(*video_shape, -1).permute(0, 4, 1, 2, 3)  # raw reshape: see module docstring
        grid = F.pad(grid, (1, 1, 1, 1, 2, 0))  # causal on depth: two frames before, none after
        return self.dsconv(grid).permute(0, 2, 3, 4, 1).reshape(shape)


class _Attention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm = _BufferLayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(x).chunk(2, dim=-1)  # k and v from the un-normalised input
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        # logits = 8 q·k + bias; SDPA scales by `scale`, so pass 8 explicitly
        mask = bias.to(q.dtype)[None] if bias is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=8.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Sequential):
    def __init__(self, dim: int) -> None:
        inner = int(4 * (2 / 3) * dim)
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, 2 * inner, bias=False), nn.Identity(), nn.Identity(),
                         nn.Linear(inner, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self[1](self[0](x)).chunk(2, dim=-1)
        return self[4](F.gelu(gate) * h)


class _Layer(nn.ModuleList):
    """Slots 0 (PEG), 1 (attention), 3 (feed-forward); slot 2 (cross-attention) is unused, as in the original."""

    def __init__(self, cfg: CTCLIPConfig) -> None:
        super().__init__()
        self.add_module("0", _PEG(cfg.dim))
        self.add_module("1", _Attention(cfg.dim, cfg.dim_head, cfg.heads))
        self.add_module("3", _FeedForward(cfg.dim))


class _Transformer(nn.Module):
    def __init__(self, cfg: CTCLIPConfig, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(depth))
        self.norm_out = _BufferLayerNorm(cfg.dim)

    def forward(self, x: torch.Tensor, video_shape: tuple[int, int, int, int], bias: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = layer._modules["0"](x, video_shape) + x  # type: ignore[misc]
            x = layer._modules["1"](x, bias) + x  # type: ignore[misc]
            x = layer._modules["3"](x) + x  # type: ignore[misc]
        return self.norm_out(x)


class _PositionBias(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(2, dim), nn.LeakyReLU(0.1)),
                                  nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)),
                                  nn.Linear(dim, heads)])

    def forward(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        pos = torch.stack((ys.flatten(), xs.flatten()), dim=-1)
        rel = (pos[:, None, :] - pos[None, :, :]).float()
        rel = torch.sign(rel) * torch.log(rel.abs() + 1)
        for layer in self.net:
            rel = layer(rel)
        return rel.permute(2, 0, 1)  # (heads, i, j)


class _Codebook(nn.Module):
    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.register_buffer("embed", F.normalize(torch.randn(1, size, dim), dim=-1))


class _VectorQuantize(nn.Module):
    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self._codebook = _Codebook(dim, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed = self._codebook.embed[0].float()
        flat = x.reshape(-1, x.shape[-1]).float()
        index = (F.normalize(flat, dim=-1) @ F.normalize(embed, dim=-1).T).argmax(dim=-1)
        return embed[index].reshape(x.shape)


class CTCLIPViT(NativeBackbone):
    """CT-CLIP image encoder. Input ``(B, 1, 240, 480, 480)``; ``cls`` = 512-d L2-normalised visual latent."""

    name = "ct-clip"
    config_class = CTCLIPConfig

    def __init__(self, config: CTCLIPConfig) -> None:
        super().__init__(config)
        c = config
        patch_dim = c.channels * c.patch_size ** 2 * c.temporal_patch_size
        self.spatial_rel_pos_bias = _PositionBias(c.dim, c.heads)
        # index 0 is the original's Rearrange layer (no parameters); kept so keys match
        self.to_patch_emb = nn.Sequential(nn.Identity(), nn.LayerNorm(patch_dim), nn.Linear(patch_dim, c.dim),
                                          nn.LayerNorm(c.dim))
        self.enc_spatial_transformer = _Transformer(c, c.spatial_depth)
        self.enc_temporal_transformer = _Transformer(c, c.temporal_depth)
        self.vq = _VectorQuantize(c.dim, c.codebook_size)
        self.to_visual_latent = nn.Linear(c.dim_image, c.dim_latent, bias=False)

    @property
    def embed_dim(self) -> int:
        return int(self.config.dim_latent)

    def expected_input(self) -> tuple[int | None, ...]:
        c = self.config
        return (c.channels, c.frames, c.image_size, c.image_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded (and, with ``quantize``, VQ) token grid ``(B, t, h, w, dim)``."""
        c = self.config
        b, ch = x.shape[:2]
        t, h, w = c.grid
        pt, p = c.temporal_patch_size, c.patch_size
        patches = x.reshape(b, ch, t, pt, h, p, w, p).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, t, h, w, -1)
        tokens = self.to_patch_emb(patches)
        video = (b, t, h, w)
        bias = self.spatial_rel_pos_bias(h, w, x.device)
        tokens = self.enc_spatial_transformer(tokens.reshape(b * t, h * w, -1), video, bias)
        tokens = tokens.reshape(b, t, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b * h * w, t, -1)
        tokens = self.enc_temporal_transformer(tokens, video, None)
        tokens = tokens.reshape(b, h, w, t, -1).permute(0, 3, 1, 2, 4)
        return self.vq(tokens) if c.quantize else tokens

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.encode(x)
        pooled = tokens.mean(dim=1).reshape(x.shape[0], -1)
        latent = F.normalize(self.to_visual_latent(pooled.to(self.to_visual_latent.weight.dtype)), dim=-1)
        return {"cls": latent, "patch": tokens}

    def patch_geometry(self, input_geometry: Geometry, grid: tuple[int, int, int]) -> Geometry:
        c = self.config
        return patch_grid(input_geometry, (c.temporal_patch_size, c.patch_size, c.patch_size), grid)

    def describe(self) -> str:
        c = self.config
        return (f"CT-CLIP CTViT: width {c.dim}, {c.spatial_depth} spatial + {c.temporal_depth} temporal blocks, "
                f"{c.heads} heads x {c.dim_head}, patch {c.temporal_patch_size}x{c.patch_size}x{c.patch_size}, "
                f"VQ codebook {c.codebook_size} ({'on' if c.quantize else 'off'}), {c.dim_latent}-d visual latent")


_DROP = ("to_patch_emb_first_frame.", "to_pixels", "vq._codebook.initted", "vq._codebook.cluster_size",
         "vq._codebook.embed_avg", "discr.", "vgg.")


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CT-CLIP_v2.pt`` (whole CLIP) or a bare CTViT state dict → encoder + ``to_visual_latent`` keys.

    Parameters the encoder never uses are dropped: the decoder side, codebook statistics, the
    (unused) context norms and the empty null key/values of self-attention.
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith("visual_transformer."):
            name = key[len("visual_transformer."):]
        elif key.startswith("to_visual_latent."):
            name = key
        elif any(k.startswith("visual_transformer.") for k in state):
            continue  # text side, temperature, extra latents
        else:
            name = key
        if name.startswith(_DROP) or ".context_norm." in name:
            continue
        if name.endswith(".null_kv"):
            if value.numel():
                raise CheckpointError(f"{key}: self-attention with null key/values is not supported")
            continue
        out[name] = value
    return out
