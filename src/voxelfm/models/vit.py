"""``VisionTransformer3D``: the VoxelFM backbone (docs/original.md §1.2)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from voxelfm.core.errors import ConfigError, InputValidationError
from voxelfm.core.geometry import Geometry
from voxelfm.models.backbones.grid import patch_grid
from voxelfm.models.config import ViTConfig
from voxelfm.models.layers import Block, PatchEmbed3D
from voxelfm.models.rope import RopePositionEmbedding3D


class VisionTransformer3D(nn.Module):
    """3D ViT with CLS + register tokens and 3D RoPE; input ``(B, D, H, W)`` normalised CT.

    Token order: ``[CLS, reg_1..reg_R, patch_1..patch_N]`` with patches in (d h w) row-major
    order. ``forward`` returns the dict of docs/original.md §1.2. Attributes ``spec`` (the
    :class:`~voxelfm.preprocess.PreprocessSpec` the weights expect) and ``model_id`` are set by
    :func:`~voxelfm.models.load_model` / :func:`~voxelfm.models.build_model`.

    Implements the backbone interface of :mod:`voxelfm.models.backbones.base` (registry name
    ``voxelfm``; its spec is a :class:`~voxelfm.preprocess.PreprocessSpec`; slabs supported).
    """

    name = "voxelfm"
    supports_slabs = True

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        c = config.embed_dim
        self.embed_dim = c
        self.patch_size = config.patch_size
        self.num_register_tokens = config.num_register_tokens
        self.patch_embed = PatchEmbed3D(config.patch_size, c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, c))
        self.mask_token = nn.Parameter(torch.zeros(1, c))
        self.rope_embed = RopePositionEmbedding3D(config.head_dim, config.rope_base, config.rope_rescale_coords)
        self.blocks = nn.ModuleList(
            Block(c, config.num_heads, config.mlp_ratio, layerscale=config.layerscale,
                  drop_path_rate=config.drop_path_rate, ffn_layer=config.ffn_layer,
                  qkv_bias=config.qkv_bias, proj_bias=config.proj_bias, ffn_bias=config.ffn_bias)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(c, eps=1e-5)
        self.grad_checkpointing = False
        self.spec: Any = None  # PreprocessSpec | None (typed loosely: models must not import io)
        self.model_id: str = "untrained"
        self.init_weights()

    # -- initialisation (docs/original.md §1.6) ------------------------------------------------------
    def init_weights(self) -> None:
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Conv3d keeps PyTorch's default init; LayerScale gammas start at config.layerscale.

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in backward (training memory ∝ depth⁰ instead of depth)."""
        self.grad_checkpointing = enabled

    # -- geometry ---------------------------------------------------------------------------------
    def grid_shape(self, d: int, h: int, w: int) -> tuple[int, int, int]:
        """Patch grid of a ``(D, H, W)`` input (conv floor semantics)."""
        p = self.patch_size
        return (d // p, h // p, w // p)

    @property
    def num_special_tokens(self) -> int:
        return 1 + self.num_register_tokens

    # -- backbone interface (voxelfm.models.backbones.base) --------------------------------------
    def default_spec(self) -> Any:
        from voxelfm.preprocess.spec import PreprocessSpec

        return PreprocessSpec(patch_size=self.patch_size)

    def check_spec(self, spec: Any) -> None:
        from voxelfm.preprocess.spec import PreprocessSpec

        if not isinstance(spec, PreprocessSpec):
            raise ConfigError(f"a VoxelFM backbone needs a PreprocessSpec, got the {getattr(spec, 'recipe', '?')!r} recipe")
        if spec.patch_size != self.patch_size:
            raise ConfigError(f"preprocess spec patch_size {spec.patch_size} does not match the model's patch size {self.patch_size}")

    def prepare(self, volume: Any, spec: Any = None) -> Any:
        """The VoxelFM preprocessing (:func:`voxelfm.preprocess.preprocess`) with the model's spec."""
        from voxelfm.preprocess.pipeline import preprocess

        spec = spec if spec is not None else (self.spec or self.default_spec())
        self.check_spec(spec)
        return preprocess(volume, spec)

    def prepare_input(self, volume: Any) -> torch.Tensor:
        return self.input_tensor(self.prepare(volume))

    def input_tensor(self, pre: Any) -> torch.Tensor:
        return torch.from_numpy(pre.array)[None]

    def patch_geometry(self, input_geometry: Geometry, grid: tuple[int, int, int]) -> Geometry:
        p = self.patch_size
        return patch_grid(input_geometry, (p, p, p), grid)

    def architecture(self) -> dict[str, Any]:
        return self.config.to_dict()

    def describe(self) -> str:
        c = self.config
        return (f"3D ViT, width {c.embed_dim}, depth {c.depth}, {c.num_heads} heads, patch {c.patch_size}³,\n"
                f"  {c.num_register_tokens} register tokens, 3D RoPE (base {c.rope_base})")

    # -- forward ----------------------------------------------------------------------------------
    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, tuple[int, int, int]]:
        if x.ndim != 4:
            raise InputValidationError(f"VisionTransformer3D expects (B, D, H, W) input, got shape {tuple(x.shape)}")
        if min(x.shape[1:]) < self.patch_size:
            raise InputValidationError(
                f"input {tuple(x.shape[1:])} is smaller than one patch ({self.patch_size}) along some axis")
        tokens, grid = self.patch_embed(x)
        if masks is not None:
            if masks.shape != tokens.shape[:2]:
                raise InputValidationError(f"masks must have shape {tuple(tokens.shape[:2])}, got {tuple(masks.shape)}")
            tokens = torch.where(masks.unsqueeze(-1), self.mask_token.to(tokens.dtype).unsqueeze(0), tokens)
        b = tokens.shape[0]
        cls = self.cls_token.expand(b, -1, -1).to(tokens.dtype)
        regs = self.register_tokens.expand(b, -1, -1).to(tokens.dtype)
        return torch.cat((cls, regs, tokens), dim=1), grid

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        tokens, grid = self.prepare_tokens(x, masks)
        rope = self.rope_embed(grid)
        ns = self.num_special_tokens
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, rope, ns, use_reentrant=False)
            else:
                tokens = block(tokens, rope, ns)
        normed = self.norm(tokens)
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_norm_regtokens": normed[:, 1:ns],
            "x_norm_patchtokens": normed[:, ns:],
            "x_prenorm": tokens,
            "masks": masks,
        }

    def _cast_linear_weights(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The linear layers' weights and biases in ``dtype`` (what autocast would make of them), cached
        on the model until any of them changes (in place through autograd-visible ops, by
        ``load_state_dict``, or by moving the model; writes through ``.data`` or raw buffers are not seen)."""
        linear = [(f"{m}.{n}", t) for m, mod in self.named_modules() if isinstance(mod, nn.Linear)
                  for n, t in mod.named_parameters(recurse=False)]
        key = (dtype, tuple((t.data_ptr(), t._version, t.device) for _, t in linear))
        cached = getattr(self, "_cast_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, {name: t.detach().to(dtype) for name, t in linear})
            self._cast_cache = cached
        return cached[1]

    @torch.inference_mode()
    def forward_features(self, x: torch.Tensor, *, autocast_dtype: torch.dtype | None = None) -> dict[str, Any]:
        """Inference helper: float32 ``cls`` (B, C), ``registers`` (B, R, C), ``patch`` (B, d, h, w, C), ``grid``.

        ``autocast_dtype=torch.bfloat16`` runs the blocks under autocast (CPU or CUDA); outputs are
        returned in float32 either way.
        """
        grid = self.grid_shape(*x.shape[1:])
        low = autocast_dtype is not None and autocast_dtype != torch.float32
        ctx = torch.autocast(device_type=x.device.type, dtype=autocast_dtype) if low else contextlib.nullcontext()
        with ctx:
            if low and x.device.type == "cpu":
                # Autocast casts every linear weight again in each forward (its cache lives one context):
                # on CPU that was about a third of a bf16 forward at 512 patches. The same casts, kept.
                out = torch.func.functional_call(self, self._cast_linear_weights(autocast_dtype), (x,), strict=False)
            else:
                out = self.forward(x)
        b = x.shape[0]
        return {
            "cls": out["x_norm_clstoken"].float(),
            "registers": out["x_norm_regtokens"].float(),
            "patch": out["x_norm_patchtokens"].float().reshape(b, *grid, self.embed_dim),
            "grid": grid,
        }
