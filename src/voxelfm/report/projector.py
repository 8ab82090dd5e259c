"""Projector: learned queries cross-attend to frozen CT tokens, then an MLP into the LM width.

Follows the original ``AttentionalPoolProjector`` (docs/original.md §5.1): learned queries (not projected),
separate key/value projections of the vision tokens, one multi-head cross-attention, then
LayerNorm → Linear → GELU → Linear to the LM hidden size. Four optional additions, all on by
default because frozen features of different backbones differ in scale, often share one large
component across scans, and the paper's version has no notion of where a patch is:

* ``standardize``: each feature channel is centred and scaled with the training scans' mean and
  spread (:meth:`FeatureProjector.fit_standardization`; patch tokens and the CLS token each have
  their own statistics, kept as buffers in the projector's weights). Without it, a component every
  scan shares (typical of ViT features) dominates the per-token LayerNorm and the small part that
  differs between scans reaches the LM too weakly to be learned: the LM learns one report for all
  scans (benchmarks/README.md, "Report generation reads the image").
* ``summary_token``: one more output embedding, placed first, an MLP of the scan's ``[CLS, mean
  patch]`` standardised across training scans, so what differs between scans reaches the LM
  directly rather than averaged away by the queries.
* ``input_norm``: a LayerNorm on the input tokens.
* ``position_encoding``: a fixed sinusoidal 3D position code (of normalised patch-grid
  coordinates) added to the keys.

Set all four to False for the paper's exact layout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
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
    standardize: bool = True
    summary_token: bool = True

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


def _mean_and_scale(sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and spread of (N, C) samples, the spread floored so that a channel that
    barely varies in training does not blow up at test time (the floor is relative to the typical
    channel's variance, so it does not depend on the features' units)."""
    sample = sample.to(torch.float64)
    var = sample.var(dim=0, unbiased=False)
    floor = 1e-4 * float(var.mean()) + 1e-12
    return sample.mean(dim=0).float(), (var + floor).sqrt().float()


#: Rows of the standardisation buffers: statistics of the patch tokens, then of the CLS token.
PATCH, CLS = 0, 1


class FeatureProjector(nn.Module):
    """Map a variable number of CT tokens (B, N, C) to ``num_queries`` LM embeddings (B, Q, D)."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_dim
        if config.standardize:  # identity until fit_standardization sees the training tokens
            self.register_buffer("feature_mean", torch.zeros(2, config.in_dim))
            self.register_buffer("feature_scale", torch.ones(2, config.in_dim))
        if config.summary_token:
            self.register_buffer("summary_mean", torch.zeros(2 * config.in_dim))
            self.register_buffer("summary_scale", torch.ones(2 * config.in_dim))
            self.summary = nn.Sequential(nn.Linear(2 * config.in_dim, h), nn.GELU(), nn.Linear(h, config.out_dim))
        self.queries = nn.Parameter(torch.randn(config.num_queries, h) * h**-0.5)
        self.input_norm = nn.LayerNorm(config.in_dim) if config.input_norm else nn.Identity()
        self.k_proj = nn.Linear(config.in_dim, h)
        self.v_proj = nn.Linear(config.in_dim, h)
        self.attn = nn.MultiheadAttention(h, config.num_heads, dropout=config.dropout,
                                          batch_first=True)
        self.norm = nn.LayerNorm(h)
        self.mlp = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, config.out_dim))

    @torch.no_grad()
    def fit_standardization(self, scans: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Set the input statistics from the training scans, given as ``(patch tokens (N, C), CLS (C,)
        or None)`` each: per-channel mean and spread of all patch tokens, of the CLS tokens, and
        (for the summary token) of each scan's ``[CLS, mean patch]`` vector across scans."""
        if not scans:
            return
        patches = torch.cat([p for p, _ in scans])
        cls = torch.stack([c if c is not None else p.mean(0) for p, c in scans])
        if self.config.standardize:
            for row, sample in ((PATCH, patches), (CLS, cls)):
                self.feature_mean[row], self.feature_scale[row] = _mean_and_scale(sample)
        if self.config.summary_token:
            summaries = torch.cat([cls, torch.stack([p.mean(0) for p, _ in scans])], dim=1)
            self.summary_mean[:], self.summary_scale[:] = _mean_and_scale(summaries)

    def standardized(self, tokens: torch.Tensor, cls_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` centred and scaled per channel (patch statistics; CLS statistics where ``cls_mask``)."""
        if not self.config.standardize:
            return tokens
        mean, scale = self.feature_mean[PATCH], self.feature_scale[PATCH]
        if cls_mask is not None:
            is_cls = cls_mask.unsqueeze(-1)
            mean = torch.where(is_cls, self.feature_mean[CLS], mean)
            scale = torch.where(is_cls, self.feature_scale[CLS], scale)
        return (tokens - mean.to(tokens.dtype)) / scale.to(tokens.dtype)

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cls_mask: torch.Tensor | None = None, *,
                noise_std: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``tokens`` (B,N,C); ``padding_mask`` (B,N) True = padding; ``positions`` (B,N,hidden);
        ``cls_mask`` (B,N) True = CLS token. ``noise_std``: Gaussian noise added to the
        standardised tokens (the original training's embedding noise, here in units of each
        channel's spread across scans rather than of whatever scale a backbone has)."""
        x = self.standardized(tokens, cls_mask)
        if noise_std > 0:
            x = x + noise_std * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        summary = self._summary(tokens, padding_mask, cls_mask, noise_std, generator) if self.config.summary_token else None
        x = self.input_norm(x)
        keys = self.k_proj(x)
        if positions is not None and self.config.position_encoding:
            keys = keys + positions.to(keys.dtype)
        values = self.v_proj(x)
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1).to(keys.dtype)
        pooled, _ = self.attn(queries, keys, values, key_padding_mask=padding_mask,
                              need_weights=False)
        out = self.mlp(self.norm(pooled))
        return out if summary is None else torch.cat([summary.unsqueeze(1).to(out.dtype), out], dim=1)

    def _summary(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None, cls_mask: torch.Tensor | None,
                 noise_std: float, generator: torch.Generator | None) -> torch.Tensor:
        """One LM embedding per scan (B, D) from its ``[CLS, mean patch]`` standardised across scans."""
        real = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device) if padding_mask is None else ~padding_mask
        is_cls = torch.zeros_like(real) if cls_mask is None else cls_mask
        patch = (real & ~is_cls).unsqueeze(-1).to(tokens.dtype)
        mean_patch = (tokens * patch).sum(1) / patch.sum(1).clamp_min(1)
        has_cls = is_cls.any(dim=1, keepdim=True)
        cls = torch.where(has_cls, (tokens * is_cls.unsqueeze(-1).to(tokens.dtype)).sum(1), mean_patch)
        z = (torch.cat([cls, mean_patch], dim=1) - self.summary_mean.to(tokens.dtype)) / self.summary_scale.to(tokens.dtype)
        if noise_std > 0:
            z = z + noise_std * torch.randn(z.shape, generator=generator).to(z.device, z.dtype)
        return self.summary(z)

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
            for added in ("standardize", "summary_token"):  # projectors saved before these existed lack them
                fields.setdefault(added, False)
            config = ProjectorConfig(**fields)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError, ConfigError) as exc:
            raise ConfigError(located(cfg_path, f"not a projector config ({exc})")) from None
        model = cls(config)
        state = read_weights_file(weights)  # the .safetensors name means it is never unpickled
        # One line listing missing/unexpected/mismatched keys instead of torch's multi-line report.
        load_state_dict_strict(model, state, weights)
        return model
