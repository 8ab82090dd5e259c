"""Fixtures for embed tests: small NIfTI scans on disk and a small backbone whose blocks matter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from synthetic_ct import ct_volume
from voxelfm.core import CTVolume
from voxelfm.models import ViTConfig, build_model
from voxelfm.preprocess import PreprocessSpec

CONFIG = ViTConfig(embed_dim=48, depth=2, num_heads=2, patch_size=8, num_register_tokens=2)
SPEC = PreprocessSpec(patch_size=8, max_patches=80)


def phantom(seed: int = 0, shape: tuple[int, int, int] = (30, 56, 56)) -> CTVolume:
    """The shared body phantom (``synthetic_ct``) on a 2 × 1 × 1 mm grid."""
    return ct_volume(shape, (2.0, 1.0, 1.0), (-27.5, -30.0, 100.0), seed=seed, noise_hu=20.0, source=f"phantom{seed}")


def make_model(seed: int = 0) -> torch.nn.Module:
    model = build_model(CONFIG, seed=seed, spec=SPEC)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # LayerScale 0.5 and sharper attention, so context and RoPE matter
        for block in model.blocks:
            block.ls1.gamma.fill_(0.5)
            block.ls2.gamma.fill_(0.5)
            block.attn.qkv.weight.copy_(0.25 * torch.randn(block.attn.qkv.weight.shape, generator=gen))
    from voxelfm.models import compute_model_id

    model.model_id = compute_model_id(model.state_dict())
    return model.eval()


@pytest.fixture()
def model() -> torch.nn.Module:
    return make_model()


@pytest.fixture()
def model_dir(tmp_path: Path, model: torch.nn.Module) -> Path:
    from voxelfm.models import save_model

    save_model(model, tmp_path / "model", spec=SPEC)
    return tmp_path / "model"


@pytest.fixture()
def scans_dir(tmp_path: Path) -> Path:
    """Three good NIfTI scans and one corrupt file."""
    from voxelfm.io import write_nifti

    folder = tmp_path / "scans"
    for i in range(3):
        vol = phantom(i)
        write_nifti(vol.array, vol.geometry, folder / f"case{i}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"this is not a NIfTI file")
    return folder
