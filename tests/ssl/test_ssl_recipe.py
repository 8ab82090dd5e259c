"""The small-batch recipe (cpu_small): frozen random teacher, same-view targets, iBOT, student export."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_prepared, tiny_overrides  # noqa: E402

from voxelfm.core.errors import CheckpointError, ConfigError  # noqa: E402
from voxelfm.ssl import export, load_config, pretrain  # noqa: E402
from voxelfm.ssl.export import default_part  # noqa: E402
from voxelfm.ssl.meta_arch import SSLMetaArch  # noqa: E402


def _recipe(index: Path, **extra: object) -> dict:
    """cpu_small's settings on the seconds-fast tiny architecture."""
    keep = {"dino.teacher_view", "dino.koleo_loss_weight", "ibot.loss_weight"}
    overrides = [o for o in tiny_overrides(index, **extra) if o.split("=")[0] not in keep or o.split("=")[0] in extra]
    overrides = [o for o in overrides if not o.startswith(("dino.head_n_prototypes", "ibot.head_n_prototypes"))]
    overrides += ["dino.head_n_prototypes=32", "ibot.head_n_prototypes=32", "crops.local_crops_number=0"]
    return load_config("cpu_small", overrides)


def test_cpu_small_resolves_to_the_studied_settings() -> None:
    config = load_config("cpu_small")
    assert config["student"]["embed_dim"] == 216 and config["student"]["layerscale"] == 1.0
    assert config["dino"]["teacher_view"] == "same" and config["ibot"]["loss_weight"] == 1.0
    assert config["schedules"]["momentum"] == {"start": 1.0, "peak": 1.0, "end": 1.0, "warmup_epochs": 0}
    assert config["crops"]["window_probability"] == 0 and not config["crops"]["axis_permutation"]
    assert default_part(config) == "student"
    assert default_part(load_config("cpu_tiny")) == "teacher"


class _FixedCls(torch.nn.Module):
    """A teacher backbone stub with fixed CLS tokens (not a ViT, so the full-forward path calls it)."""

    def __init__(self, cls: torch.Tensor) -> None:
        super().__init__()
        self.cls = cls

    def forward(self, x: torch.Tensor | None, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"x_norm_clstoken": self.cls}


def test_same_view_targets_are_not_swapped(tmp_path) -> None:
    index = make_prepared(tmp_path / "data", n=2)
    torch.manual_seed(0)
    batch_cls = torch.randn(4, 36)
    targets = {}
    for view in ("same", "cross"):
        config = _recipe(index, **{"dino.teacher_view": view})
        model = SSLMetaArch(config)
        seen = []
        model.teacher["dino_head"].register_forward_hook(lambda _m, args, _o, seen=seen: seen.append(args[0]))
        model.teacher["backbone"] = _FixedCls(batch_cls)
        model._teacher({"global_crops": None, "n_masked_patches": 0}, 0.04)
        targets[view] = seen[0]
    assert torch.equal(targets["same"], batch_cls)
    assert torch.equal(targets["cross"], torch.cat((batch_cls[2:], batch_cls[:2])))


def test_teacher_view_must_be_known(tmp_path) -> None:
    index = make_prepared(tmp_path / "data", n=2)
    with pytest.raises(ConfigError, match="teacher_view"):
        SSLMetaArch(_recipe(index, **{"dino.teacher_view": "both"}))


def test_frozen_teacher_run_exports_the_student(tmp_path) -> None:
    from voxelfm.models import load_model

    index = make_prepared(tmp_path / "data", n=4)
    run = pretrain(_recipe(index, **{"train.max_steps": 3, "schedules.lr.peak": 1e-3}), out_dir=tmp_path / "run")
    student = load_model(export(run, tmp_path / "student"))
    teacher = load_model(export(run, tmp_path / "teacher", part="teacher"))
    torch.manual_seed(0)  # the Trainer's seeding (train.seed = 0): the exact initial weights
    init = SSLMetaArch(load_config(run / "config.yaml")).teacher["backbone"].state_dict()
    t_state, s_state = teacher.state_dict(), student.state_dict()
    name = "blocks.0.attn.qkv.weight"
    assert torch.equal(t_state[name], init[name])  # momentum 1: the teacher never moved
    assert not torch.equal(s_state[name], init[name])  # the student learned
    with pytest.raises(CheckpointError, match="teacher\\|student"):
        export(run, tmp_path / "bad", part="head")
