"""Projector: learned queries cross-attend to frozen CT tokens, then an MLP into the LM width.

Follows the original ``AttentionalPoolProjector`` (docs/original.md §5.1): learned queries (not projected),
separate key/value projections of the vision tokens, one multi-head cross-attention, then
LayerNorm → Linear → GELU → Linear to the LM hidden size. Two optional additions, both on by
default because frozen features of different backbones differ in scale and the paper's version
has no notion of where a patch is: a LayerNorm on the input tokens and a fixed sinusoidal 3D
position code (of normalised patch-grid coordinates) added to the keys. Set ``input_norm=False``
and ``position_encoding=False`` for the paper's exact layout.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from voxelfm.core.errors import CheckpointError, ConfigError, located


@dataclass(frozen=True)
class ProjectorConfig:
    """Shape of the projector. Paper: hidden 2048, 128 queries, 8 heads, dropout 0.1."""

    in_dim: int
    out_dim: int
    hidden_dim: int = 512
    num_queries: int = 32
    num_heads: int = 8
    dropout: float = 0.1
    input_norm: bool = True
    position_encoding: bool = True

    def __post_init__(self) -> None:
        if min(self.in_dim, self.out_dim, self.hidden_dim, self.num_queries, self.num_heads) < 1:
            raise ConfigError(f"projector sizes must be positive: {self}")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"projector hidden_dim {self.hidden_dim} not divisible by num_heads {self.num_heads}"
            )


def grid_position_code(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Sinusoidal code (d*h*w, dim) of patch centres at normalised coordinates in [-1, 1]."""
    per_axis = dim // 3
    freqs = torch.exp(torch.arange(per_axis // 2, dtype=torch.float32)
                      * (-math.log(100.0) / max(per_axis // 2, 1))) * math.pi
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1 for n in grid]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    codes = []
    for coord in (zz, yy, xx):
        angles = coord.reshape(-1, 1) * freqs[None, :]
        codes.extend([angles.sin(), angles.cos()])
    code = torch.cat(codes, dim=1)
    # Zero-pad when dim is not a multiple of 6 so any hidden size works.
    return torch.nn.functional.pad(code, (0, dim - code.shape[1]))


class FeatureProjector(nn.Module):
    """Map a variable number of CT tokens (B, N, C) to ``num_queries`` LM embeddings (B, Q, D)."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_dim
        self.queries = nn.Parameter(torch.randn(config.num_queries, h) * h**-0.5)
        self.input_norm = nn.LayerNorm(config.in_dim) if config.input_norm else nn.Identity()
        self.k_proj = nn.Linear(config.in_dim, h)
        self.v_proj = nn.Linear(config.in_dim, h)
        self.attn = nn.MultiheadAttention(h, config.num_heads, dropout=config.dropout,
                                          batch_first=True)
        self.norm = nn.LayerNorm(h)
        self.mlp = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, config.out_dim))

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` (B,N,C); ``padding_mask`` (B,N) True = padding; ``positions`` (B,N,hidden)."""
        x = self.input_norm(tokens)
        keys = self.k_proj(x)
        if positions is not None and self.config.position_encoding:
            keys = keys + positions.to(keys.dtype)
        values = self.v_proj(x)
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1).to(keys.dtype)
        pooled, _ = self.attn(queries, keys, values, key_padding_mask=padding_mask,
                              need_weights=False)
        return self.mlp(self.norm(pooled))

    def save(self, directory: str | Path, name: str = "projector") -> None:
        """Write ``<name>.safetensors`` and ``<name>.json`` (config) into ``directory``."""
        from safetensors.torch import save_file

        from voxelfm.core.atomic import atomic_save, atomic_write_text

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_save(out / f"{name}.safetensors", lambda tmp: save_file(state, str(tmp)))
        atomic_write_text(out / f"{name}.json", json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, directory: str | Path, name: str = "projector") -> FeatureProjector:
        """Inverse of :meth:`save` (safetensors only; a pickle or a damaged file is one CheckpointError)."""
        from voxelfm.models.weights import load_state_dict_strict, read_weights_file

        base = Path(directory)
        cfg_path, weights = base / f"{name}.json", base / f"{name}.safetensors"
        if not cfg_path.is_file() or not weights.is_file():
            raise CheckpointError(located(base, f"missing {name}.json or {name}.safetensors"))
        try:
            fields = json.loads(cfg_path.read_text())
            config = ProjectorConfig(**fields)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ConfigError) as exc:
            raise ConfigError(located(cfg_path, f"not a projector config ({exc})")) from None
        model = cls(config)
        state = read_weights_file(weights)  # the .safetensors name means it is never unpickled
        # One line listing missing/unexpected/mismatched keys instead of torch's multi-line report.
        load_state_dict_strict(model, state, weights)
        return model
