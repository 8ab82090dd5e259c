"""Per-step schedules of lr, weight decay, teacher momentum and teacher temperature (docs/original.md §2.5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxelfm.core.errors import ConfigError


def linear_warmup_cosine_decay(start: float, peak: float, end: float, warmup: int, total: int) -> np.ndarray:
    """``total`` values: linear ``start -> peak`` over ``warmup`` steps (endpoint excluded), then a
    half-cosine ``peak -> end`` whose last value is exactly ``end`` (the original's formula)."""
    if total < 1:
        raise ConfigError(f"schedule length must be >= 1, got {total}")
    warmup = int(min(max(warmup, 0), total))
    ramp = np.linspace(start, peak, warmup, endpoint=False)
    rest = total - warmup
    cosine = end + (peak - end) * (1.0 + np.cos(np.linspace(0.0, np.pi, rest))) / 2.0
    return np.concatenate([ramp, cosine]).astype(np.float64)


@dataclass(frozen=True)
class Schedules:
    """Arrays indexed by optimizer step (length = run length)."""

    lr: np.ndarray
    last_layer_lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    def at(self, step: int) -> dict[str, float]:
        i = min(step, len(self.lr) - 1)
        return {
            "lr": float(self.lr[i]),
            "last_layer_lr": float(self.last_layer_lr[i]),
            "weight_decay": float(self.weight_decay[i]),
            "momentum": float(self.momentum[i]),
            "teacher_temp": float(self.teacher_temp[i]),
        }


def run_length(config: Mapping[str, Any]) -> tuple[int, float]:
    """(total optimizer steps, steps per nominal epoch).

    Without ``train.max_steps`` a run is ``optim.epochs x train.official_epoch_length`` steps; with
    it, the run has ``max_steps`` steps and every "epochs" quantity is rescaled by
    ``max_steps / optim.epochs`` so the schedule shapes are preserved.
    """
    epochs = float(config["optim"]["epochs"])
    if epochs <= 0:
        raise ConfigError(f"optim.epochs must be > 0, got {epochs}")
    max_steps = config["train"].get("max_steps")
    if max_steps:
        return int(max_steps), float(max_steps) / epochs
    epoch_len = int(config["train"]["official_epoch_length"])
    return int(round(epochs * epoch_len)), float(epoch_len)


def _one(spec: Mapping[str, Any], name: str, total: int, epoch_len: float) -> np.ndarray:
    missing = {"start", "peak", "end", "warmup_epochs"} - set(spec)
    if missing:
        raise ConfigError(f"schedules.{name} is missing {sorted(missing)}")
    warmup = int(round(float(spec["warmup_epochs"]) * epoch_len))
    return linear_warmup_cosine_decay(float(spec["start"]), float(spec["peak"]), float(spec["end"]), warmup, total)


SCALING_RULES = ("none", "sqrt", "linear")


def lr_scale_factor(config: Mapping[str, Any], world_size: int) -> float:
    """Factor applied to the whole lr schedule for the run's global batch
    ``batch_size_per_gpu x grad_accum_steps x world_size``.

    ``optim.scaling_rule``: ``none`` (the VoxelFM fork: the schedule's values are absolute, meant
    for its asserted ``total_batch_size``), ``sqrt`` (DINOv2's ``sqrt_wrt_1024`` with
    ``optim.scaling_batch_size`` in place of 1,024) or ``linear`` (DINO v1's rule, batch / 256).
    """
    optim, train = config["optim"], config["train"]
    rule = str(optim.get("scaling_rule", "none"))
    if rule not in SCALING_RULES:
        raise ConfigError(f"optim.scaling_rule must be {'|'.join(SCALING_RULES)}, got {rule!r}")
    if rule == "none":
        return 1.0
    reference = optim.get("scaling_batch_size")
    if not isinstance(reference, int | float) or isinstance(reference, bool) or reference <= 0:
        raise ConfigError(f"optim.scaling_batch_size must be a positive number with scaling_rule={rule}, got {reference!r}")
    ratio = int(train["batch_size_per_gpu"]) * int(train["grad_accum_steps"]) * int(world_size) / float(reference)
    return float(np.sqrt(ratio)) if rule == "sqrt" else float(ratio)


def build_schedules(config: Mapping[str, Any]) -> Schedules:
    """All schedules of a run; the prototype layer's lr is 0 for ``freeze_last_layer_epochs``.

    The lr schedule is multiplied by ``optim.lr_scale_factor`` (set by the trainer from
    :func:`lr_scale_factor`; absent or null means 1)."""
    total, epoch_len = run_length(config)
    sched = config["schedules"]
    lr = _one(sched["lr"], "lr", total, epoch_len) * float(config["optim"].get("lr_scale_factor") or 1.0)
    last = lr.copy()
    freeze = int(round(float(config["optim"]["freeze_last_layer_epochs"]) * epoch_len))
    last[: min(freeze, total)] = 0.0
    return Schedules(
        lr=lr,
        last_layer_lr=last,
        weight_decay=_one(sched["weight_decay"], "weight_decay", total, epoch_len),
        momentum=_one(sched["momentum"], "momentum", total, epoch_len),
        teacher_temp=_one(sched["teacher_temp"], "teacher_temp", total, epoch_len),
    )
