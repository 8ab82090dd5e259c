"""3D RoPE against the formulas of docs/original.md §1.5, computed independently."""

from __future__ import annotations

import math

import pytest
import torch
from original_vit import rope_tables, rotate

from voxelfm.models import RopePositionEmbedding3D, apply_rope, patch_coords, rope_periods


def test_periods_of_the_released_model() -> None:
    # head_dim 72, base 100: 100^(i/12) — the values listed in docs/original.md §1.5.
    expected = [1.0, 1.468, 2.154, 3.162, 4.642, 6.813, 10.0, 14.68, 21.54, 31.62, 46.42, 68.13]
    periods = rope_periods(72, 100.0)
    assert periods.dtype == torch.float32 and periods.shape == (12,)
    assert periods.tolist() == pytest.approx(expected, rel=1e-3)


def test_coordinates_are_per_axis_normalised_patch_centres_in_dhw_order() -> None:
    coords = patch_coords((2, 3, 4))
    assert coords.shape == (24, 3)
    # token n = (z * 3 + y) * 4 + x; c = 2 (k + 0.5) / n - 1 per axis
    for n, (z, y, x) in enumerate((z, y, x) for z in range(2) for y in range(3) for x in range(4)):
        want = [2 * (z + 0.5) / 2 - 1, 2 * (y + 0.5) / 3 - 1, 2 * (x + 0.5) / 4 - 1]
        assert coords[n].tolist() == pytest.approx(want, abs=1e-6)


def test_tables_match_explicit_loops() -> None:
    grid = (3, 2, 5)
    sin, cos = RopePositionEmbedding3D(head_dim=36, base=100.0)(grid)
    ref_sin, ref_cos = rope_tables(grid, 36, 100.0)
    assert sin.shape == (30, 3, 6)
    torch.testing.assert_close(sin, ref_sin, atol=1e-6, rtol=0)
    torch.testing.assert_close(cos, ref_cos, atol=1e-6, rtol=0)


def test_rotation_uses_contiguous_thirds_and_interleaved_pairs() -> None:
    head_dim, grid = 24, (2, 2, 3)
    sin, cos = rope_tables(grid, head_dim, 100.0)
    x = torch.randn(2, 3, 12, head_dim, generator=torch.Generator().manual_seed(0))
    ours = apply_rope(x, sin, cos)
    torch.testing.assert_close(ours, rotate(x, sin, cos), atol=1e-6, rtol=0)
    # Spot-check one channel pair by hand: axis y (third 1), pair i = 2 → channels 8 + 4, 8 + 5.
    token, i = 7, 2
    a, b = x[0, 0, token, 8 + 2 * i], x[0, 0, token, 8 + 2 * i + 1]
    ky = (token // 3) % 2
    theta = 2 * math.pi * (2 * (ky + 0.5) / 2 - 1) / 100.0 ** (2 * i / (head_dim / 3))
    assert float(ours[0, 0, token, 8 + 2 * i]) == pytest.approx(float(a * math.cos(theta) - b * math.sin(theta)), abs=1e-5)
    assert float(ours[0, 0, token, 8 + 2 * i + 1]) == pytest.approx(float(a * math.sin(theta) + b * math.cos(theta)), abs=1e-5)


def test_rotation_preserves_norms_and_relative_positions() -> None:
    sin, cos = rope_tables((4, 1, 1), 6, 10.0)
    q = torch.randn(1, 1, 1, 6).expand(1, 1, 4, 6)
    k = torch.randn(1, 1, 1, 6).expand(1, 1, 4, 6)
    rq, rk = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    # q_m · k_n depends only on m - n along an evenly spaced axis.
    dots = rq[0, 0] @ rk[0, 0].T
    assert float(dots[0, 1]) == pytest.approx(float(dots[1, 2]), abs=1e-5)
    assert float(dots[1, 3]) == pytest.approx(float(dots[0, 2]), abs=1e-5)


def test_rescale_augmentation_only_in_training() -> None:
    rope = RopePositionEmbedding3D(head_dim=12, base=100.0, rescale_coords=2.0)
    rope.eval()
    a, _ = rope((2, 2, 2))
    b, _ = rope((2, 2, 2))
    torch.testing.assert_close(a, b)
    rope.train()
    torch.manual_seed(0)
    c, _ = rope((2, 2, 2))
    assert not torch.allclose(a, c)


def test_periods_buffer_is_persistent() -> None:
    rope = RopePositionEmbedding3D(head_dim=72)
    assert "periods" in rope.state_dict()


@pytest.mark.parametrize("grad", [False, True])
def test_rotate_qk_equals_apply_rope_on_q_and_k(grad: bool) -> None:
    # The fused form used by Attention (complex multiply on the qkv projection) against the
    # per-tensor formula: patch rows of q and k rotated, special rows and v untouched.
    from voxelfm.models.rope import rotate_qk

    heads, head_dim, grid, ns = 2, 12, (2, 3, 2), 3
    sin, cos = rope_tables(grid, head_dim, 100.0)
    n = ns + 12
    qkv = torch.randn(2, n, 3, heads, head_dim, generator=torch.Generator().manual_seed(1), requires_grad=grad)
    before = qkv.detach().clone()
    with torch.set_grad_enabled(grad):
        out = rotate_qk(qkv if grad else qkv.detach(), sin, cos, ns)
    q, k, v = out.detach().permute(2, 0, 3, 1, 4).unbind(0)
    q0, k0, v0 = before.permute(2, 0, 3, 1, 4).unbind(0)
    torch.testing.assert_close(q[:, :, ns:], rotate(q0[:, :, ns:], sin, cos), atol=1e-6, rtol=0)
    torch.testing.assert_close(k[:, :, ns:], rotate(k0[:, :, ns:], sin, cos), atol=1e-6, rtol=0)
    assert torch.equal(q[:, :, :ns], q0[:, :, :ns]) and torch.equal(k[:, :, :ns], k0[:, :, :ns])
    assert torch.equal(v, v0)
    if grad:  # out of place, and differentiable: the rotation is orthogonal, so |grad| is kept
        assert torch.equal(qkv.detach(), before)
        out.pow(2).sum().backward()
        torch.testing.assert_close(qkv.grad, 2 * before, atol=1e-5, rtol=1e-5)


def test_rotate_qk_in_bf16_rounds_once() -> None:
    from voxelfm.models.rope import rotate_qk

    sin, cos = rope_tables((2, 2, 2), 12, 100.0)
    qkv = torch.randn(1, 9, 3, 2, 12, generator=torch.Generator().manual_seed(2)).bfloat16()
    want = rotate_qk(qkv.float(), sin, cos, 1).bfloat16()
    with torch.no_grad():
        got = rotate_qk(qkv.clone(), sin, cos, 1)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
