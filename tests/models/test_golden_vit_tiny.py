"""Golden outputs of the seeded ``vit-tiny`` preset: any change to init, token order, RoPE or
blocks shows up here. Regenerate deliberately with ``VOXELFM_REGEN_GOLDEN=1 pytest <this file>``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from vit_helpers import smooth_volume

from voxelfm.models import build_model

GOLDEN = Path(__file__).parent / "data" / "golden_vit_tiny.json"


def _outputs() -> dict[str, list[float]]:
    model = build_model("vit-tiny", seed=0).eval()
    with torch.no_grad():
        for block in model.blocks:  # LayerScale 0.5 instead of 1e-5 so the blocks shape the output
            block.ls1.gamma.fill_(0.5)
            block.ls2.gamma.fill_(0.5)
        out = model(smooth_volume((28, 28, 42), seed=0))  # grid 2 × 2 × 3
    return {
        "cls_head": out["x_norm_clstoken"][0, :8].tolist(),
        "register0_head": out["x_norm_regtokens"][0, 0, :8].tolist(),
        "patch5_head": out["x_norm_patchtokens"][0, 5, :8].tolist(),
        "patch_abs_sum_per_token": out["x_norm_patchtokens"][0].abs().sum(-1).tolist(),
        "prenorm_abs_mean": [float(out["x_prenorm"].abs().mean())],
    }


def test_seeded_vit_tiny_matches_golden() -> None:
    got = _outputs()
    if os.environ.get("VOXELFM_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(got) == set(golden)
    for key, values in golden.items():
        assert got[key] == pytest.approx(values, abs=1e-4, rel=1e-5), key
