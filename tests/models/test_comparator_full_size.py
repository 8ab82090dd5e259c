"""The comparator networks at their released width and depth, and the default recipes (slow; CI runs it).

Parameter counts of the released architectures are checked on the meta device (they match the
originals: M3D-CLIP 87.4 M, CT-CLIP 25.9 M + 151 M latent projection minus 2.5 M of decoder-only
tensors, Merlin 121.9 M, RadFM 66.2 M). To keep CI cost small, the forward pass runs every block at
full width and depth on a small input; where the input size fixes a tensor shape (M3D's position
embedding, CT-CLIP's latent projection) that one tensor is smaller. Full native inputs are timed
in benchmarks/bench_backbones.py instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelfm.core.geometry import Geometry
from voxelfm.core.types import CTVolume
from voxelfm.models.backbones import NativeSpec, backbone_class, build_backbone, prepare_volume

PARAMS_M = {"m3d-clip": 87.39, "ct-clip": 174.42, "merlin": 121.88, "radfm": 66.21}
CASES = {
    "m3d-clip": ({"img_size": [8, 64, 64]}, (1, 1, 8, 64, 64), (2, 4, 4), 768),
    "ct-clip": ({"image_size": 120, "frames": 20}, (1, 1, 20, 120, 120), (2, 6, 6), 512),
    "merlin": ({}, (1, 1, 32, 32, 32), (2, 1, 1), 2048),
    "radfm": ({}, (1, 3, 128, 128, 16), (4, 4, 4), 768),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_released_architecture_builds_and_runs(name: str) -> None:
    cls = backbone_class(name)
    with torch.device("meta"):
        full = cls(cls.config_class())
    assert sum(p.numel() for p in full.parameters()) / 1e6 == pytest.approx(PARAMS_M[name], abs=0.01)
    overrides, shape, grid, dim = CASES[name]
    model = build_backbone(name, overrides, seed=0)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    out = model.forward_features(x)
    assert out["grid"] == grid and out["patch"].shape[-1] == dim
    assert torch.isfinite(out["cls"]).all() and torch.isfinite(out["patch"]).all()


@pytest.mark.slow
def test_default_recipes_give_the_native_shapes() -> None:
    arr = np.full((30, 40, 50), -1000.0, dtype=np.float32)
    arr[5:25, 8:32, 10:40] = 40.0
    volume = CTVolume(array=arr, geometry=Geometry(shape=arr.shape, spacing=(2.0, 0.9, 0.8)), source="box")
    expected = {"m3d-clip": (1, 32, 256, 256), "ct-clip": (1, 240, 480, 480), "merlin": (1, 224, 224, 160),
                "radfm": (3, 512, 512, 28)}
    for name, shape in expected.items():
        assert prepare_volume(volume, NativeSpec(name)).array.shape == shape, name
