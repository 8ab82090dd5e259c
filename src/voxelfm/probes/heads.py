"""Probe heads on frozen features (docs/original.md §4.1, §4.6, §4.7).

Every head is called as ``head(x, mask=None, pos=None)``:

* ``x``: CLS vectors ``(B, C)``, patch tokens ``(B, N, C)`` or a patch grid ``(B, d, h, w, C)``;
* ``mask``: ``(B, N)`` bool, True for real tokens (padding masks for grids of different sizes);
* ``pos``: ``(B, N, 3)`` normalised (z, y, x) patch-centre positions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxelfm.core.errors import ConfigError


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the token axis of ``(B, N, C)``, counting only real tokens."""
    if mask is None:
        return x.mean(1)
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class MLPHead(nn.Module):
    """``Linear(C, hidden) → ReLU → Dropout → Linear(hidden, out)`` on CLS (or mean-pooled tokens)."""

    def __init__(self, in_dim: int, out_dim: int = 1, hidden_dim: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 3:
            x = masked_mean(x, mask)
        return self.net(x)


def few_query_attention(attn: nn.MultiheadAttention, q: torch.Tensor, tokens: torch.Tensor,
                        pad: torch.Tensor | None, training: bool, proj: nn.Linear | None = None) -> torch.Tensor:
    """``attn(q, tokens, tokens)`` computed without projecting every token to keys and values.

    With few queries (Q) and many tokens (N), ``q_h · (W_k t + b_k)`` equals ``(W_kᵀ q_h) · t``
    plus a per-query constant that softmax cancels, and ``Σ a_i (W_v t_i + b_v)`` equals
    ``W_v (Σ a_i t_i) + b_v Σ a_i``. So the N x H x H key/value projections become N x H dot
    products per head: exactly the same result (the tests compare against
    ``nn.MultiheadAttention``) at a fraction of the cost, which is what makes a Q-Former probe on
    thousands of patch tokens cheap on CPU.

    With ``proj``, ``tokens`` are raw inputs and the attended tokens are ``proj(tokens)``; the
    projection is folded the same way (into the query for the scores, after pooling for the
    values), so no token is ever projected: N x C work per query head instead of N x C x H.
    """
    b, nq, h = q.shape
    heads = attn.num_heads
    d = h // heads
    w_q, w_k, w_v = attn.in_proj_weight.split(h)
    b_q, _b_k, b_v = attn.in_proj_bias.split(h) if attn.in_proj_bias is not None else (None, None, None)
    qp = F.linear(q, w_q, b_q).view(b, nq, heads, d).transpose(1, 2)  # (B, heads, Q, d)
    u = torch.einsum("bhqd,hdc->bhqc", qp, w_k.view(heads, d, h)) / d**0.5  # query folded into key space
    if proj is not None:  # fold the token projection too (its bias adds a per-query constant)
        u = torch.einsum("bhqc,ci->bhqi", u, proj.weight)
    scores = torch.einsum("bhqc,bnc->bhqn", u, tokens)
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if training and attn.dropout > 0:
        weights = F.dropout(weights, attn.dropout)
    pooled = torch.einsum("bhqn,bnc->bhqc", weights, tokens)  # (B, heads, Q, H) (or C with proj)
    if proj is not None:
        pooled = torch.einsum("bhqi,ci->bhqc", pooled, proj.weight)
        if proj.bias is not None:
            pooled = pooled + weights.sum(-1, keepdim=True) * proj.bias
    values = torch.einsum("bhqc,hdc->bhqd", pooled, w_v.view(heads, d, h))
    if b_v is not None:
        values = values + weights.sum(-1, keepdim=True) * b_v.view(heads, 1, d)
    out = values.transpose(1, 2).reshape(b, nq, h)
    return attn.out_proj(out)


class _CrossAttentionLayer(nn.Module):
    """Queries attend to tokens; ``residual=False`` is the original single bare attention (docs/original.md §4.1)."""

    def __init__(self, dim: int, num_heads: int, attn_dropout: float, residual: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.residual = residual
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=attn_dropout, batch_first=True)
        if residual:
            self.norm_q = nn.LayerNorm(dim)
            self.norm_kv = nn.LayerNorm(dim)
            self.norm_ffn = nn.LayerNorm(dim)
            hidden = int(dim * mlp_ratio)
            self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, pad: torch.Tensor | None,
                proj: nn.Linear | None = None) -> torch.Tensor:
        if not self.residual:
            return few_query_attention(self.attn, q, kv, pad, self.training, proj)
        kv = self.norm_kv(kv)
        q = q + few_query_attention(self.attn, self.norm_q(q), kv, pad, self.training)
        return q + self.ffn(self.norm_ffn(q))


class QFormerHead(nn.Module):
    """Learned queries cross-attending to the patch tokens (the paper's "Q-Former", docs/original.md §4.1).

    With ``num_queries=1`` (and the defaults 1 layer, ``residual=False``, no positions) this is the
    original head: token projection → dropout → one multi-head cross-attention → dropout → linear.
    The default is 4 queries (outputs averaged): a single query whose first attention is spread over
    hundreds of tokens often fails to find a finding that occupies a few of them within a short
    schedule (benchmarks/README.md, probes); several independently initialised queries find it
    reliably at almost the same cost. More layers (pre-norm residual blocks with an FFN) and an
    additive projection of the normalised patch positions are options.

    ``token_norm`` layer-normalises every input token before the projection (scale-free inputs).
    Off by default: a token that stands out by its norm is often exactly the finding, and
    normalising it away stopped the head from finding a one-token signal in the tests.
    ``query_std`` is the standard deviation of the initial queries, and ``dropout`` applies to the
    projected tokens and to the pooled output.

    ``feature_dropout`` (default: ``dropout``) is the original dropout on the token features;
    ``token_dropout`` instead drops whole tokens from the attention during training (never every
    token of a scan). A Bernoulli draw per token feature is most of a training step on CPU
    (~80 % at 32 x 512 x 192), one draw per token is negligible.

    ``skip`` adds a linear path from a global vector to the output: ``"cls"`` (the backbone's CLS,
    passed as ``cls=``) or ``"mean"`` (the masked mean of the input tokens). The output is then
    ``Linear(dropout(global)) + attention branch`` with the attention branch's output layer
    zero-initialised, so training starts as a linear probe on the global vector and the learned
    queries add what the pooled vector misses. Why: at ~150 training scans the attention alone
    does not find a finding that lives in one of hundreds of tokens (benchmarks/README.md,
    probes), and a Q-Former that starts from nothing lost to the MLP on CLS.
    """

    def __init__(
        self, in_dim: int, out_dim: int = 1, hidden_dim: int = 256, num_queries: int = 4, num_layers: int = 1,
        num_heads: int = 4, dropout: float = 0.5, attn_dropout: float = 0.1, residual: bool | None = None,
        use_positions: bool = False, mlp_ratio: float = 2.0, token_norm: bool = False, query_std: float = 1.0,
        skip: str | None = None, skip_dropout: float = 0.0, feature_dropout: float | None = None,
        token_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ConfigError(f"Q-Former hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        if skip not in (None, "cls", "mean"):
            raise ConfigError(f"Q-Former skip must be 'cls', 'mean' or null, got {skip!r}")
        if not 0.0 <= token_dropout < 1.0:
            raise ConfigError(f"Q-Former token_dropout must be in [0, 1), got {token_dropout}")
        self.token_dropout = float(token_dropout)
        residual = num_layers > 1 if residual is None else residual
        self.token_norm = nn.LayerNorm(in_dim) if token_norm else None
        self.token_proj = nn.Linear(in_dim, hidden_dim)
        self.pos_proj = nn.Linear(3, hidden_dim) if use_positions else None
        self.queries = nn.Parameter(torch.randn(1, num_queries, hidden_dim) * query_std)
        self.drop_tokens = nn.Dropout(dropout if feature_dropout is None else feature_dropout)
        self.layers = nn.ModuleList(
            _CrossAttentionLayer(hidden_dim, num_heads, attn_dropout, residual, mlp_ratio) for _ in range(num_layers)
        )
        self.drop_out = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, out_dim)
        self.skip = skip
        self.skip_proj = nn.Linear(in_dim, out_dim) if skip else None
        self.drop_skip = nn.Dropout(skip_dropout)
        if skip:  # starts at zero: no random projection of the global vector to unlearn, and a
            # silent attention branch, so training starts as a linear probe on the global vector
            for layer in (self.out, self.skip_proj):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, pos: torch.Tensor | None = None,
                cls: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 5:
            x = x.flatten(1, 3)
        if x.dim() != 3:
            raise ConfigError(f"the Q-Former needs patch tokens (B, N, C); got shape {tuple(x.shape)}")
        if self.skip_proj is None:
            return self._attend(x, mask, pos)
        if self.skip == "cls":
            if cls is None:
                raise ConfigError("this Q-Former has a CLS skip path but no CLS vectors were given")
            glob = cls
        else:
            glob = masked_mean(x, mask)
        return self.skip_proj(self.drop_skip(glob)) + self._attend(x, mask, pos)

    def _attend(self, x: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor | None) -> torch.Tensor:
        """The attention branch: learned queries cross-attending to the tokens, then the output layer."""
        if self.token_norm is not None:
            x = self.token_norm(x)
        pad = None if mask is None else ~mask
        if self.training and self.token_dropout > 0:
            drop = torch.rand(x.shape[:2], device=x.device) < self.token_dropout
            dropped = drop if pad is None else drop | pad
            # A scan whose every real token was drawn keeps them all (attention needs one key).
            original = torch.zeros_like(drop) if pad is None else pad
            pad = torch.where(dropped.all(1, keepdim=True), original, dropped)
        q = self.queries.expand(x.shape[0], -1, -1)
        if len(self.layers) == 1 and not self.layers[0].residual and self.pos_proj is None:
            # The original single bare attention: fold the token projection into it (dropout on
            # the input features instead of the projected ones) and never project a token.
            q = self.layers[0](q, self.drop_tokens(x), pad, proj=self.token_proj)
            return self.out(self.drop_out(q.mean(1)))
        tokens = self.token_proj(x)
        if self.pos_proj is not None:
            if pos is None:
                raise ConfigError("this Q-Former uses positions but none were given")
            tokens = tokens + self.pos_proj(pos)
        tokens = self.drop_tokens(tokens)
        for layer in self.layers:
            q = layer(q, tokens, pad)
        return self.out(self.drop_out(q.mean(1)))


class AttentionLocaliser(nn.Module):
    """Attention-pooled coordinate regression over patch tokens (docs/original.md §4.6), on true patch centres.

    tokens → Linear(C, width) + Linear(3, width)(pos) → self-attention → score MLP → softmax over
    the real tokens → prediction = Σ softmax · pos (a convex combination of patch centres, so it
    always lies inside the scanned volume). The original attended at full width C; ``width``
    projects first to keep CPU training fast (``width=None`` keeps C).
    """

    def __init__(self, in_dim: int, width: int | None = 128, num_heads: int = 4, hidden_dim: int = 128,
                 self_attention: bool = True) -> None:
        super().__init__()
        width = in_dim if width is None else width
        if width % num_heads:
            raise ConfigError(f"localiser width {width} is not divisible by num_heads {num_heads}")
        self.proj = nn.Linear(in_dim, width)
        self.pos_proj = nn.Linear(3, width)
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True) if self_attention else None
        self.score = nn.Sequential(nn.Linear(width, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 5:
            x = x.flatten(1, 3)
        if pos is None:
            raise ConfigError("the localiser needs patch-centre positions")
        h = self.proj(x) + self.pos_proj(pos)
        pad = None if mask is None else ~mask
        if self.attn is not None:
            h = self.attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
        logits = self.score(h).squeeze(-1)
        if pad is not None:
            logits = logits.masked_fill(pad, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return torch.einsum("bn,bnk->bk", weights, pos)


class _ConvBlock3D(nn.Module):
    """(Conv3d 3x3x3 → GroupNorm → ReLU) x 2; norms can be Identity (the original's last block)."""

    def __init__(self, cin: int, cout: int, norm: bool) -> None:
        super().__init__()

        def gn(ch: int) -> nn.Module:
            return nn.GroupNorm(min(8, ch), ch) if norm else nn.Identity()

        self.net = nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False), gn(cout), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False), gn(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SegmentationDecoder(nn.Module):
    """Patch grid ``(B, d, h, w, C)`` → voxel logits ``(B, K, *target_shape)`` (docs/original.md §4.7).

    1x1x1 conv C → hidden, then ``num_steps`` x [ConvBlock3D, trilinear upsample to a size
    interpolated linearly from the grid size to ``target_shape``], then a 1x1x1 conv to K classes.
    Channels halve per step down to ``min_channels``.
    """

    def __init__(self, in_dim: int, num_classes: int, target_shape: tuple[int, int, int] = (112, 112, 112), hidden_dim: int = 64,
                 num_steps: int = 3, min_channels: int = 64, final_norm: bool = False) -> None:
        super().__init__()
        self.target_shape = tuple(int(s) for s in target_shape)
        self.num_steps = int(num_steps)
        self.inp = nn.Conv3d(in_dim, hidden_dim, 1)
        blocks, ch = [], hidden_dim
        for i in range(num_steps):
            out = max(ch // 2, min(min_channels, ch))
            blocks.append(_ConvBlock3D(ch, out, norm=final_norm or i < num_steps - 1))
            ch = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv3d(ch, num_classes, 1)

    def step_sizes(self, grid: tuple[int, int, int], target: tuple[int, int, int] | None = None
                   ) -> list[tuple[int, int, int]]:
        """Spatial size after each upsampling step."""
        target = self.target_shape if target is None else tuple(int(t) for t in target)
        return [
            tuple(int(round(n0 + (i + 1) / self.num_steps * (t - n0))) for n0, t in zip(grid, target, strict=True))
            for i in range(self.num_steps)
        ]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, pos: torch.Tensor | None = None,
                target_shape: tuple[int, int, int] | None = None) -> torch.Tensor:
        """Logits ``(B, K, *target)``; ``target_shape`` overrides the constructor's (per-scan grids)."""
        if x.dim() != 5:
            raise ConfigError(f"the decoder needs a patch grid (B, d, h, w, C); got shape {tuple(x.shape)}")
        h = self.inp(x.permute(0, 4, 1, 2, 3))
        sizes = self.step_sizes(tuple(x.shape[1:4]), target_shape)
        for block, size in zip(self.blocks, sizes, strict=True):
            h = F.interpolate(block(h), size=size, mode="trilinear", align_corners=False)
        return self.head(h)


@dataclass
class HeadSpec:
    """What to build: ``kind`` in mlp | qformer | localiser | decoder, plus its keyword arguments."""

    kind: str
    in_dim: int
    out_dim: int
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_head(spec: HeadSpec) -> nn.Module:
    """Instantiate a head from a :class:`HeadSpec` (unknown parameters are a ConfigError)."""
    kinds: dict[str, Any] = {"mlp": MLPHead, "qformer": QFormerHead, "localiser": AttentionLocaliser,
                             "decoder": SegmentationDecoder}
    if spec.kind not in kinds:
        raise ConfigError(f"unknown head {spec.kind!r}; choose from {sorted(kinds)}")
    try:
        if spec.kind == "localiser":
            return AttentionLocaliser(spec.in_dim, **spec.params)
        if spec.kind == "decoder":
            return SegmentationDecoder(spec.in_dim, spec.out_dim, **spec.params)
        return kinds[spec.kind](spec.in_dim, spec.out_dim, **spec.params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for head {spec.kind!r}: {exc}") from None


__all__ = [
    "AttentionLocaliser",
    "few_query_attention",
    "HeadSpec",
    "MLPHead",
    "QFormerHead",
    "SegmentationDecoder",
    "build_head",
    "masked_mean",
]
