"""Schedules and parameter groups (docs/original.md §2.5)."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.models import DINOHead, VisionTransformer3D, ViTConfig
from voxelfm.ssl.config import load_config
from voxelfm.ssl.param_groups import apply_schedule, build_param_groups
from voxelfm.ssl.schedules import build_schedules, linear_warmup_cosine_decay, run_length


def test_linear_warmup_cosine_decay_formula() -> None:
    s = linear_warmup_cosine_decay(0.0, 1.0, 0.1, warmup=3, total=10)
    assert len(s) == 10
    assert np.allclose(s[:3], [0.0, 1 / 3, 2 / 3])
    assert s[3] == pytest.approx(1.0) and s[-1] == pytest.approx(0.1)
    t = np.linspace(0, np.pi, 7)
    assert np.allclose(s[3:], 0.1 + 0.9 * (1 + np.cos(t)) / 2)


def test_default_schedules_match_the_original() -> None:
    config = load_config(None, ["train.max_steps=1000", "optim.epochs=100"])  # 10 steps per epoch
    sched = build_schedules(config)
    assert run_length(config) == (1000, 10.0)
    assert sched.lr[0] == 0.0 and sched.lr[100] == pytest.approx(1e-3) and sched.lr[-1] == pytest.approx(1e-6)
    assert sched.weight_decay[0] == pytest.approx(0.04) and sched.weight_decay[-1] == pytest.approx(0.2)
    assert np.allclose(sched.momentum, 0.994)
    assert sched.teacher_temp[0] == pytest.approx(0.04) and np.allclose(sched.teacher_temp[300:], 0.07)
    assert np.all(sched.last_layer_lr[:10] == 0) and sched.last_layer_lr[10] == sched.lr[10]


def test_run_length_without_max_steps() -> None:
    assert run_length(load_config(None))[0] == 100_000


def test_param_groups_layer_decay_patch_embed_and_wd_exemptions() -> None:
    depth = 3
    backbone = VisionTransformer3D(ViTConfig(embed_dim=36, depth=depth, num_heads=1))
    head = DINOHead(36, 16, 8, 8)
    groups = build_param_groups([("backbone.", backbone, True), ("head.", head, False)], depth, 0.9, 0.2)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["backbone.patch_embed.proj.weight"]["lr_multiplier"] == pytest.approx(0.9 ** 4 * 0.2)
    assert by_name["backbone.cls_token"]["lr_multiplier"] == pytest.approx(0.9 ** 4)
    assert by_name["backbone.blocks.0.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(0.9 ** 3)
    assert by_name["backbone.blocks.2.mlp.fc1.weight"]["lr_multiplier"] == pytest.approx(0.9)
    assert by_name["backbone.norm.weight"]["lr_multiplier"] == pytest.approx(1.0)
    assert by_name["head.mlp.0.weight"]["lr_multiplier"] == pytest.approx(1.0)
    for name in ("backbone.blocks.0.attn.qkv.bias", "backbone.blocks.1.norm1.weight", "backbone.blocks.1.ls1.gamma"):
        assert by_name[name]["wd_multiplier"] == 0.0
    assert by_name["backbone.blocks.1.attn.qkv.weight"]["wd_multiplier"] == 1.0
    last = [n for n, g in by_name.items() if g["is_last_layer"]]
    assert last and all("last_layer" in n for n in last)
    n_params = sum(p.numel() for g in groups for p in g["params"])
    assert n_params == sum(p.numel() for p in [*backbone.parameters(), *head.parameters()])

    import torch

    opt = torch.optim.AdamW(groups, lr=0.0)
    apply_schedule(opt, lr=1e-3, weight_decay=0.05, last_layer_lr=0.0)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.0 if g["is_last_layer"] else 1e-3 * g["lr_multiplier"])
        assert g["weight_decay"] == pytest.approx(0.05 * g["wd_multiplier"])
