"""Original checkpoints → model directory → same tokens as the original formulation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from original_vit import original_forward
from typer.testing import CliRunner
from vit_helpers import SMALL, perturb_, smooth_volume

from voxelfm.cli.main import app
from voxelfm.core.errors import CheckpointError
from voxelfm.models import DINOHead, build_model, convert_checkpoint, load_model


def _original_config(path: Path, depth: int = SMALL.depth) -> Path:
    """A run config.yaml in the original layout (extra keys the converter must ignore included)."""
    config = {
        "student": {"arch": "vit_base", "embed_dim": 48, "depth": depth, "num_heads": 2, "patch_size": 4,
                    "mlp_ratio": 4, "num_register_tokens": 2, "layerscale": 1e-5, "rope_base": 100.0,
                    "rope_rescale_coords": None, "drop_path_rate": 0.1, "drop_path_uniform": True,
                    "ffn_layer": "mlp", "qkv_bias": True, "proj_bias": True, "ffn_bias": True,
                    "block_chunks": 0, "pretrained_weights": ""},
        "crops": {"global_crops_size": 112, "local_crops_size": 56, "local_crops_number": 8},
        "datasets": [{"name": "radiomics_datasets", "weight": 1.0, "storage": "torch",
                      "pixel_range": {"lower": -1000, "upper": 1900},
                      "norm": {"mean": -573.8, "std": 461.3}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def original() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    backbone = perturb_(build_model(SMALL, seed=11), seed=11).state_dict()
    head = DINOHead(48, out_dim=32, hidden_dim=16, bottleneck_dim=8).state_dict()
    return {k: v.clone() for k, v in backbone.items()}, head


def _assert_same_tokens(model_dir: Path, state: dict[str, torch.Tensor]) -> None:
    model = load_model(model_dir)
    x = smooth_volume((12, 8, 16), seed=4)
    with torch.no_grad():
        ours = model(x)
        ref = original_forward(state, x, num_heads=2)
    for key in ("x_norm_clstoken", "x_norm_patchtokens"):
        assert float((ours[key] - ref[key]).abs().max()) <= 1e-4, key


def test_teacher_checkpoint_round_trip(tmp_path: Path, original) -> None:
    backbone, head = original
    teacher = {f"backbone.{k}": v for k, v in backbone.items()} | {f"dino_head.{k}": v for k, v in head.items()}
    ckpt = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher}, ckpt)
    out = tmp_path / "converted"
    model = convert_checkpoint(ckpt, _original_config(tmp_path / "config.yaml"), out)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "preprocess.json", "README.md"}
    assert model.spec.hu_max == 1900 and model.spec.norm_mean == -573.8 and model.spec.patch_size == 4
    assert model.config.drop_path_rate == 0.0  # teacher weights: no stochastic depth
    assert "teacher_checkpoint.pth" in (out / "README.md").read_text()
    _assert_same_tokens(out, backbone)


def test_training_checkpoint_takes_the_teacher(tmp_path: Path, original) -> None:
    backbone, head = original
    student = {k: torch.zeros_like(v) for k, v in backbone.items()}
    model_state = ({f"teacher.backbone.{k}": v for k, v in backbone.items()}
                   | {f"student.backbone.module.{k}": v for k, v in student.items()}
                   | {f"teacher.dino_head.{k}": v for k, v in head.items()}
                   | {"dino_loss.center": torch.zeros(1, 32)})
    ckpt = tmp_path / "checkpoint.pth"
    torch.save({"iteration": 99, "model": model_state, "optimizer": {"state": {}, "param_groups": []}}, ckpt)
    convert_checkpoint(ckpt, _original_config(tmp_path / "config.yaml"), tmp_path / "out")
    _assert_same_tokens(tmp_path / "out", backbone)


def test_bare_state_dict_with_ddp_prefixes(tmp_path: Path, original) -> None:
    backbone, _ = original
    ckpt = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v.half() for k, v in backbone.items()}, ckpt)  # fp16 is cast to fp32
    model = convert_checkpoint(ckpt, _original_config(tmp_path / "config.yaml"), tmp_path / "out")
    assert model.cls_token.dtype == torch.float32


def test_mismatched_checkpoints_list_the_keys(tmp_path: Path, original) -> None:
    backbone, _ = original
    missing = {f"backbone.{k}": v for k, v in backbone.items() if k != "blocks.1.attn.proj.weight"}
    torch.save({"teacher": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth: .*1 missing keys: blocks\.1\.attn\.proj\.weight"):
        convert_checkpoint(tmp_path / "missing.pth", _original_config(tmp_path / "c.yaml"), tmp_path / "o1")
    torch.save({"teacher": {f"backbone.{k}": v for k, v in backbone.items()}}, tmp_path / "deep.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.1\."):
        convert_checkpoint(tmp_path / "deep.pth", _original_config(tmp_path / "c1.yaml", depth=1), tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_unsafe_pickles_are_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "evil.pth"
    torch.save({"teacher": Path("/etc/passwd")}, ckpt)  # an arbitrary object: weights_only refuses it
    with pytest.raises(CheckpointError, match="weights_only=True"):
        convert_checkpoint(ckpt, _original_config(tmp_path / "c.yaml"), tmp_path / "o")


def test_cli_convert_checkpoint(tmp_path: Path, original) -> None:
    backbone, _ = original
    torch.save({"teacher": {f"backbone.{k}": v for k, v in backbone.items()}}, tmp_path / "t.pth")
    result = CliRunner().invoke(app, ["convert-checkpoint", str(tmp_path / "t.pth"),
                                      str(_original_config(tmp_path / "config.yaml")), str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    _assert_same_tokens(tmp_path / "m", backbone)
    bad = CliRunner().invoke(app, ["convert-checkpoint", str(tmp_path / "nope.pth"),
                                   str(tmp_path / "config.yaml"), str(tmp_path / "m2")])
    assert bad.exit_code == 1 and "checkpoint file not found" in " ".join(bad.output.split())
