"""AdamW parameter groups: layer-wise lr decay, patch-embed lr multiplier, weight-decay exemptions
and the prototype ("last layer") flag (docs/original.md §2.5)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

_EMBED_NAMES = ("patch_embed", "cls_token", "register_tokens", "mask_token", "pos_embed")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_id(name: str, depth: int, is_backbone: bool) -> int:
    """0 for the embeddings and special tokens, i + 1 for block i, depth + 1 otherwise (head too)."""
    if not is_backbone:
        return depth + 1
    if any(name.startswith(n) or f".{n}" in name for n in _EMBED_NAMES):
        return 0
    match = _BLOCK.search(name)
    return int(match.group(1)) + 1 if match else depth + 1


def is_no_weight_decay(name: str) -> bool:
    """Biases, norms and LayerScale gammas are not decayed."""
    return name.endswith(".bias") or "norm" in name or "gamma" in name


@dataclass(frozen=True)
class ParamInfo:
    lr_multiplier: float
    wd_multiplier: float
    is_last_layer: bool


def param_info(name: str, depth: int, is_backbone: bool, layerwise_decay: float, patch_embed_lr_mult: float) -> ParamInfo:
    lr_mult = layerwise_decay ** (depth + 1 - layer_id(name, depth, is_backbone))
    if is_backbone and "patch_embed" in name:
        lr_mult *= patch_embed_lr_mult
    return ParamInfo(lr_mult, 0.0 if is_no_weight_decay(name) else 1.0, "last_layer" in name)


def build_param_groups(
    modules: Iterable[tuple[str, nn.Module, bool]], depth: int, layerwise_decay: float = 0.9,
    patch_embed_lr_mult: float = 0.2,
) -> list[dict[str, Any]]:
    """Groups for ``torch.optim.AdamW`` from ``(prefix, module, is_backbone)`` triples.

    Parameters sharing (lr multiplier, wd multiplier, last-layer flag) are fused into one group;
    each group carries those three keys so the trainer can set lr and wd per step.
    """
    fused: dict[tuple[float, float, bool], dict[str, Any]] = {}
    for prefix, module, is_backbone in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            info = param_info(name, depth, is_backbone, layerwise_decay, patch_embed_lr_mult)
            key = (info.lr_multiplier, info.wd_multiplier, info.is_last_layer)
            group = fused.setdefault(key, {
                "params": [], "names": [], "lr_multiplier": info.lr_multiplier,
                "wd_multiplier": info.wd_multiplier, "is_last_layer": info.is_last_layer,
            })
            group["params"].append(param)
            group["names"].append(f"{prefix}{name}")
    return list(fused.values())


def apply_schedule(optimizer: Any, lr: float, weight_decay: float, last_layer_lr: float) -> None:
    """Set each group's lr/wd for this step from the schedules and the group's multipliers."""
    for group in optimizer.param_groups:
        base = last_layer_lr if group["is_last_layer"] else lr
        group["lr"] = base * group["lr_multiplier"]
        group["weight_decay"] = weight_decay * group["wd_multiplier"]
