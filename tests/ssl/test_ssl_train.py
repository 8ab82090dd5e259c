"""End-to-end training on synthetic volumes: loss goes down, resume continues the same
trajectory, checkpoints rotate, export gives a loadable model directory."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_prepared, single_thread, tiny_overrides  # noqa: E402

from voxelfm.ssl import export, load_config, pretrain, read_metrics  # noqa: E402
from voxelfm.ssl.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from voxelfm.ssl.trainer import Trainer  # noqa: E402


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared"), n=6)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_loss_goes_down_on_synthetic_volumes(index, tmp_path) -> None:
    overrides = tiny_overrides(index, **{
        "train.max_steps": 14, "schedules.lr.warmup_epochs": 0, "schedules.lr.peak": 2e-3, "schedules.lr.end": 2e-3,
        "optim.freeze_last_layer_epochs": 0, "schedules.teacher_temp.warmup_epochs": 0,
        "schedules.teacher_temp.start": 0.07, "checkpointing.period": 100,
    })
    run = pretrain(None, overrides, out_dir=tmp_path / "run")
    losses = [r["total_loss"] for r in read_metrics(run)]
    assert len(losses) == 14 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    keys = set(read_metrics(run)[-1])
    assert {"dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss", "lr", "weight_decay",
            "momentum", "teacher_temp", "teacher_entropy", "teacher_cls_effective_rank", "grad_norm"} <= keys
    assert (run / "config.yaml").is_file()


def test_resumed_run_continues_the_same_trajectory(index, tmp_path) -> None:
    overrides = tiny_overrides(index, **{"train.max_steps": 10, "checkpointing.period": 5})
    straight = pretrain(None, overrides, out_dir=tmp_path / "straight")
    config = load_config(None, overrides)
    Trainer(config, tmp_path / "resumed").fit(stop_at_step=5)  # "interrupted" after 5 steps
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [5]
    resumed_trainer = Trainer(config, tmp_path / "resumed")
    assert resumed_trainer.start_step == 5
    resumed_trainer.fit()
    a = {r["step"]: r["total_loss"] for r in read_metrics(straight)}
    b = {r["step"]: r["total_loss"] for r in read_metrics(tmp_path / "resumed")}
    assert sorted(b) == list(range(1, 11))
    for step in range(6, 11):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6)
    final_a = load_checkpoint(list_checkpoints(straight)[-1][1])["model"]
    final_b = load_checkpoint(list_checkpoints(tmp_path / "resumed")[-1][1])["model"]
    for key in ("teacher.backbone.blocks.0.attn.qkv.weight", "dino_loss.targets.center"):
        assert torch.allclose(final_a[key], final_b[key], atol=1e-6)


def test_checkpoints_rotate_and_export_gives_a_model_directory(index, tmp_path) -> None:
    run = pretrain(None, tiny_overrides(index, **{"train.max_steps": 6, "checkpointing.period": 2}), out_dir=tmp_path / "run")
    assert [s for s, _ in list_checkpoints(run)] == [4, 6]  # keep the last 2
    out = export(run, tmp_path / "model", max_patches=512)
    from voxelfm.models import load_model

    model = load_model(out)
    assert model.config.embed_dim == 36 and model.spec.max_patches == 512
    teacher = load_checkpoint(list_checkpoints(run)[-1][1])["model"]
    assert torch.equal(model.state_dict()["blocks.1.mlp.fc2.weight"], teacher["teacher.backbone.blocks.1.mlp.fc2.weight"])
    features = model.forward_features(torch.zeros(1, 28, 28, 28))
    assert features["cls"].shape == (1, 36)


def test_multiresolution_anisotropic_crops_train(index, tmp_path) -> None:
    overrides = tiny_overrides(index, **{
        "train.max_steps": 3, "crops.global_crops_size": "[[28, 28, 28], [14, 28, 42]]",
        "crops.local_crops_size": "[[14, 14, 14], [14, 14, 28]]", "crops.crop_pairs_ratios": "[1, 1]",
        "train.centering": "sinkhorn_knopp", "ibot.separate_head": "true",
    })
    run = pretrain(None, overrides, out_dir=tmp_path / "run")
    assert len(read_metrics(run)) == 3 and np.isfinite(read_metrics(run)[-1]["total_loss"])
