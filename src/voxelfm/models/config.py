"""``ViTConfig`` and the named presets of the 3D ViT backbone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from voxelfm.core.config_check import from_mapping
from voxelfm.core.errors import ConfigError

FFN_LAYERS = ("mlp", "swiglu", "identity")


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of :class:`~voxelfm.models.VisionTransformer3D` (docs/original.md §1.1 names).

    ``layerscale`` is the LayerScale init value (``None``/0 disables LayerScale);
    ``drop_path_rate`` applies uniformly to every block (training only);
    ``rope_rescale_coords`` is the optional RoPE coordinate-scale augmentation (training only).
    ``embed_dim`` must be divisible by ``6 * num_heads`` (three axes × pairs per head).
    """

    embed_dim: int = 864
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 14
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    layerscale: float | None = 1e-5
    rope_base: float = 100.0
    drop_path_rate: float = 0.0
    ffn_layer: str = "mlp"
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    rope_rescale_coords: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.embed_dim < 1 or self.depth < 1 or self.num_heads < 1:
            problems.append("embed_dim, depth and num_heads must be >= 1")
        elif self.embed_dim % (6 * self.num_heads) != 0:
            problems.append(
                f"embed_dim ({self.embed_dim}) must be divisible by 6 * num_heads "
                f"({6 * self.num_heads}) for 3D RoPE"
            )
        if self.patch_size < 1:
            problems.append(f"patch_size must be >= 1, got {self.patch_size}")
        if self.mlp_ratio <= 0:
            problems.append(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.num_register_tokens < 0:
            problems.append(f"num_register_tokens must be >= 0, got {self.num_register_tokens}")
        if self.rope_base <= 0:
            problems.append(f"rope_base must be > 0, got {self.rope_base}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            problems.append(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.ffn_layer not in FFN_LAYERS:
            problems.append(f"ffn_layer must be one of {FFN_LAYERS}, got {self.ffn_layer!r}")
        if self.rope_rescale_coords is not None and self.rope_rescale_coords < 1.0:
            problems.append(f"rope_rescale_coords must be >= 1 or None, got {self.rope_rescale_coords}")
        if problems:
            raise ConfigError("invalid ViTConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_special_tokens(self) -> int:
        """CLS + registers (the tokens RoPE leaves untouched)."""
        return 1 + self.num_register_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        return from_mapping(cls, data, what="ViTConfig key", check_types=True)

    def replace(self, **changes: Any) -> ViTConfig:
        return replace(self, **changes)


# Widths follow the original's rule "standard ViT width × 1.125" (768 → 864), which makes every
# preset's head_dim 72 like the released model (three RoPE axes × 12 interleaved pairs).
# vit-tiny is kept shallow (6 blocks) so CPU pretraining in tests and the demo stays fast.
PRESETS: dict[str, ViTConfig] = {
    "vit-tiny": ViTConfig(embed_dim=216, depth=6, num_heads=3),
    "vit-small": ViTConfig(embed_dim=432, depth=12, num_heads=6),
    "vit-base": ViTConfig(embed_dim=864, depth=12, num_heads=12),
    "vit-large": ViTConfig(embed_dim=1152, depth=24, num_heads=16),
}


def resolve_config(spec: str | ViTConfig | dict[str, Any]) -> ViTConfig:
    """Turn a preset name, a config dict (optionally ``{"preset": name, **overrides}``) or a config into a ViTConfig."""
    if isinstance(spec, ViTConfig):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ConfigError(f"unknown model preset {spec!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[spec]
    if isinstance(spec, dict):
        data = dict(spec)
        preset = data.pop("preset", None)
        if preset is not None:
            return ViTConfig.from_dict({**resolve_config(str(preset)).to_dict(), **data})
        return ViTConfig.from_dict(data)
    raise ConfigError(f"cannot build a model from {type(spec).__name__}; give a preset name, dict or ViTConfig")
