"""Losses against small cases computed by hand (docs/original.md §2.2)."""

from __future__ import annotations

import math

import pytest
import torch

from voxelfm.ssl.losses import DINOLoss, IBOTPatchLoss, KoLeoLoss, sinkhorn_knopp


def _ce(target: list[float], logits: list[float], temp: float) -> float:
    exps = [math.exp(v / temp) for v in logits]
    total = sum(exps)
    return -sum(t * math.log(e / total) for t, e in zip(target, exps, strict=True))


def test_dino_loss_matches_hand_computed_cross_entropy() -> None:
    s = torch.tensor([[0.2, -0.1, 0.05], [0.0, 0.3, -0.2]])
    t = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    loss = DINOLoss(3)([s], [t])
    expected = (_ce([0.7, 0.2, 0.1], [0.2, -0.1, 0.05], 0.1) + _ce([0.1, 0.1, 0.8], [0.0, 0.3, -0.2], 0.1)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_dino_loss_sums_over_every_student_teacher_pair() -> None:
    s1, s2 = torch.tensor([[0.1, 0.2]]), torch.tensor([[0.3, -0.3]])
    t1, t2 = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    loss = DINOLoss(2)([s1, s2], [t1, t2])
    expected = sum(_ce(t, s, 0.1) for s in ([0.1, 0.2], [0.3, -0.3]) for t in ([0.5, 0.5], [0.9, 0.1]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_centering_is_lagged_first_update_copies_then_ema() -> None:
    loss = DINOLoss(3)
    t1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    first = loss.teacher_targets(t1, 0.5, "centering")
    assert torch.allclose(first, torch.softmax(t1 / 0.5, -1))  # centre still zero
    loss.targets.update()
    assert torch.allclose(loss.targets.center, torch.tensor([[0.5, 0.5, 0.0]]))
    t2 = torch.tensor([[0.0, 0.0, 2.0]])
    second = loss.teacher_targets(t2, 0.5, "centering")
    assert torch.allclose(second, torch.softmax((t2 - torch.tensor([0.5, 0.5, 0.0])) / 0.5, -1))
    loss.targets.update()
    expected = 0.9 * torch.tensor([0.5, 0.5, 0.0]) + 0.1 * torch.tensor([0.0, 0.0, 2.0])
    assert torch.allclose(loss.targets.center[0], expected)


def test_center_update_averages_rows_over_accumulated_micro_batches() -> None:
    loss = DINOLoss(2)
    loss.teacher_targets(torch.tensor([[2.0, 0.0]]), 0.1, "centering")
    loss.teacher_targets(torch.tensor([[0.0, 0.0], [1.0, 3.0], [1.0, 0.0]]), 0.1, "centering")
    loss.targets.update()
    assert torch.allclose(loss.targets.center, torch.tensor([[1.0, 0.75]]))  # mean of the 4 rows


def test_sinkhorn_knopp_gives_balanced_prototype_usage() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 4)
    q = sinkhorn_knopp(logits, 1.0, n_iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(8), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((4,), 2.0), atol=1e-3)  # n / K each


def test_sinkhorn_knopp_is_shift_invariant_and_overflow_safe() -> None:
    logits = torch.tensor([[50.0, 49.0], [48.0, 51.0]])
    q = sinkhorn_knopp(logits, 0.04)
    assert torch.isfinite(q).all()
    assert torch.allclose(q, sinkhorn_knopp(logits - 40.0, 0.04), atol=1e-5)


def test_ibot_loss_weights_patches_by_their_image_mask_count() -> None:
    student = torch.tensor([[0.1, 0.0], [0.0, 0.2], [0.3, 0.1]])
    teacher = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    # image 0 has 2 masked patches (weight 1/2), image 1 has 1 (weight 1), image 2 none.
    weights = torch.tensor([0.5, 0.5, 1.0])
    loss = IBOTPatchLoss(2)(student, teacher, weights, n_images=3)
    ce = [_ce(t.tolist(), s.tolist(), 0.1) for s, t in zip(student, teacher, strict=True)]
    expected = (0.5 * ce[0] + 0.5 * ce[1] + 1.0 * ce[2]) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_koleo_matches_hand_computed_nearest_neighbour_distances() -> None:
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # normalised: e1, e2, diagonal
    d = math.sqrt((1 - 1 / math.sqrt(2)) ** 2 + 0.5)  # every point's nearest neighbour is this far
    assert float(KoLeoLoss()(x)) == pytest.approx(-math.log(d + 1e-8), rel=1e-5)


def test_koleo_rewards_spread() -> None:
    torch.manual_seed(0)
    clustered = torch.randn(16, 8) * 0.01 + torch.ones(8)
    spread = torch.randn(16, 8)
    assert float(KoLeoLoss()(spread)) < float(KoLeoLoss()(clustered))
    assert float(KoLeoLoss()(torch.ones(1, 8))) == 0.0  # one sample: no neighbour
