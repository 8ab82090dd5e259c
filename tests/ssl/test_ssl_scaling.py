"""Single-process checks of the multi-process settings: lr scaling rule and precision choice."""

from __future__ import annotations

import math

import pytest
import torch

from voxelfm.core.errors import ConfigError
from voxelfm.ssl.config import load_config
from voxelfm.ssl.schedules import build_schedules, lr_scale_factor
from voxelfm.ssl.trainer import resolve_precision


def _config(*overrides: str) -> dict:
    return load_config(None, ["train.total_batch_size=null", "train.max_steps=20", "train.batch_size_per_gpu=16",
                              "train.grad_accum_steps=2", *overrides])


def test_lr_scaling_rules_use_the_global_batch() -> None:
    assert lr_scale_factor(_config(), world_size=8) == 1.0  # the fork: no scaling
    sqrt = _config("optim.scaling_rule=sqrt", "optim.scaling_batch_size=32")
    assert math.isclose(lr_scale_factor(sqrt, world_size=4), 2.0)  # 16 x 2 x 4 = 128 = 4 x 32
    linear = _config("optim.scaling_rule=linear", "optim.scaling_batch_size=32")
    assert math.isclose(lr_scale_factor(linear, world_size=4), 4.0)
    assert math.isclose(lr_scale_factor(linear, world_size=1), 1.0)


def test_lr_scaling_rule_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="scaling_rule"):
        lr_scale_factor(_config("optim.scaling_rule=cubic"), world_size=1)
    with pytest.raises(ConfigError, match="scaling_batch_size"):
        lr_scale_factor(_config("optim.scaling_rule=sqrt", "optim.scaling_batch_size=0"), world_size=1)


def test_schedule_applies_the_recorded_factor() -> None:
    base = build_schedules(_config()).lr
    scaled = build_schedules(_config("optim.lr_scale_factor=2.0")).lr
    assert base.max() > 0 and torch.allclose(torch.as_tensor(scaled), 2 * torch.as_tensor(base))


def test_fp16_is_refused_on_cuda_and_falls_back_on_cpu() -> None:
    with pytest.raises(ConfigError, match="bf16"):
        resolve_precision("fp16", torch.device("cuda", 0))
    assert resolve_precision("fp16", torch.device("cpu")) == torch.float32
    assert resolve_precision("bf16", torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_precision("fp32", torch.device("cuda", 0)) == torch.float32
