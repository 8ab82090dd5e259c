"""The backbone against an independent statement of the original formulation (max abs diff ≤ 1e-4)."""

from __future__ import annotations

import torch
from original_vit import original_forward, rope_tables
from vit_helpers import SMALL, perturb_, smooth_volume

from voxelfm.models import build_model


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_forward_matches_original_formulation_on_anisotropic_grid() -> None:
    model = perturb_(build_model(SMALL, seed=1), seed=1).eval()
    x = smooth_volume((12, 20, 16), batch=2)  # grid 3 × 5 × 4: every axis different
    with torch.no_grad():
        ours = model(x)
        ref = original_forward(model.state_dict(), x, num_heads=SMALL.num_heads)
    for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
        assert ours[key].shape == ref[key].shape, key
        assert _max_diff(ours[key], ref[key]) <= 1e-4, key
    # The blocks really changed the tokens (the comparison is not between two near-identities).
    with torch.no_grad():
        embedded, _ = model.prepare_tokens(x, None)
    assert _max_diff(ref["x_prenorm"], embedded) > 0.5


def test_base_width_heads_match_original() -> None:
    """Head dim 72 (the released model's): 12 pairs per axis, periods up to 100^(11/12)."""
    cfg = SMALL.replace(embed_dim=144, num_heads=2, depth=1)
    model = perturb_(build_model(cfg, seed=2), seed=2).eval()
    x = smooth_volume((8, 12, 12))
    with torch.no_grad():
        ours = model(x)
        ref = original_forward(model.state_dict(), x, num_heads=2)
    assert _max_diff(ours["x_norm_patchtokens"], ref["x_norm_patchtokens"]) <= 1e-4
    assert _max_diff(ours["x_norm_clstoken"], ref["x_norm_clstoken"]) <= 1e-4


def test_rope_changes_outputs_and_reference_agrees_only_with_correct_tables() -> None:
    """A wrong axis assignment (swapping the y/x tables) breaks parity: the check is sensitive."""
    model = perturb_(build_model(SMALL, seed=3), seed=3).eval()
    x = smooth_volume((8, 12, 16))
    grid = (2, 3, 4)
    sin, cos = rope_tables(grid, SMALL.head_dim, SMALL.rope_base)
    with torch.no_grad():
        ours = model(x)["x_norm_patchtokens"]
        wrong = original_forward(model.state_dict(), x, num_heads=2, tables=(sin[:, [0, 2, 1]], cos[:, [0, 2, 1]]))
    assert _max_diff(ours, wrong["x_norm_patchtokens"]) > 1e-2
