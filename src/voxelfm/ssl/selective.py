"""A backbone forward that returns only the tokens the losses read.

DINO reads each crop's CLS token and iBOT the masked patch tokens; every other output token of the
last block is computed and thrown away. Its feed-forward branch (2/3 of a block's per-token work)
is row-wise, so running it on the kept rows only gives the same numbers for those rows, and skips
~85 % of the rows in ``cpu_small`` (32 CLS + ~300 masked patches of 2,208 tokens). The attention
branch still runs on every token (the kept rows attend to all of them).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from voxelfm.models import VisionTransformer3D


def can_select(backbone: nn.Module) -> bool:
    """Whether :func:`forward_selected` may run on ``backbone``: a plain (not DDP- or
    FSDP-wrapped) :class:`VisionTransformer3D` whose last block drops no paths while training.

    Wrappers hook the module's own forward (gradient reduction, parameter gathering), which
    calling its blocks' parts directly would bypass.
    """
    if not isinstance(backbone, VisionTransformer3D) or hasattr(backbone, "reshard"):
        return False
    last = backbone.blocks[-1]
    if any(hasattr(m, "reshard") for m in last.modules()):
        return False
    return not (backbone.training and float(getattr(last, "drop_path_rate", 0.0)) > 0.0)


def forward_selected(backbone: VisionTransformer3D, x: torch.Tensor, masks: torch.Tensor | None,
                     patch_indices: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(cls, patches)`` of ``backbone(x, masks)``: the normed CLS tokens ``(B, C)`` and the
    normed patch tokens at ``patch_indices`` into the flattened ``(B * n_patches)`` patch rows
    (``None`` when not asked), equal to indexing the full forward's outputs."""
    tokens, grid = backbone.prepare_tokens(x, masks)
    rope = backbone.rope_embed(grid)
    ns = backbone.num_special_tokens
    *body, last = backbone.blocks
    for block in body:
        if backbone.grad_checkpointing and backbone.training and torch.is_grad_enabled():
            tokens = checkpoint(block, tokens, rope, ns, use_reentrant=False)
        else:
            tokens = block(tokens, rope, ns)
    b, n, c = tokens.shape
    tokens = tokens + last.ls1(last.attn(last.norm1(tokens), rope, ns))
    rows = torch.arange(b, device=tokens.device) * n  # each crop's CLS row
    n_cls = b
    if patch_indices is not None:
        per_crop = n - ns
        patch_rows = (patch_indices // per_crop) * n + ns + patch_indices % per_crop
        rows = torch.cat((rows, patch_rows))
    kept = tokens.reshape(b * n, c)[rows]
    kept = kept + last.ls2(last.mlp(last.norm2(kept)))
    normed = backbone.norm(kept)
    return normed[:n_cls], (normed[n_cls:] if patch_indices is not None else None)
