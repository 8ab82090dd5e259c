"""3D block masking and stratified collation statistics (docs/original.md §2.4)."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.ssl.masking import MaskingGenerator3D, stratified_masks


@pytest.mark.parametrize("count", [0, 1, 4, 37, 128, 256])
def test_generator_masks_exactly_the_requested_count(count: int) -> None:
    gen = MaskingGenerator3D((8, 8, 8), max_num_patches=256)
    mask = gen(count, np.random.default_rng(count))
    assert mask.shape == (8, 8, 8) and mask.dtype == bool
    assert int(mask.sum()) == count


def test_masks_are_blocks_not_scattered_patches() -> None:
    gen = MaskingGenerator3D((8, 8, 8), max_num_patches=256)
    rng = np.random.default_rng(0)

    def neighbour_fraction(mask: np.ndarray) -> float:
        padded = np.pad(mask, 1)
        shifts = [np.roll(padded, s, axis=a)[1:-1, 1:-1, 1:-1] for a in range(3) for s in (-1, 1)]
        return float(np.mean([sh[mask].mean() for sh in shifts]))

    blocky = np.mean([neighbour_fraction(gen(128, rng)) for _ in range(20)])
    scattered = np.mean([neighbour_fraction(rng.permutation(np.arange(512) < 128).reshape(8, 8, 8)) for _ in range(20)])
    assert scattered < 0.3 < 0.5 < blocky


def test_blocks_fit_anisotropic_grids() -> None:
    gen = MaskingGenerator3D((2, 6, 9))
    for seed in range(20):
        assert int(gen(30, np.random.default_rng(seed)).sum()) == 30


def test_stratified_ratios_and_weights() -> None:
    n_images, grid = 16, (8, 8, 8)
    n = 512
    out = stratified_masks(n_images, MaskingGenerator3D(grid), np.random.default_rng(0), 0.5, (0.1, 0.5))
    masks = out["masks"]
    counts = sorted(int(c) for c in masks.sum(1))
    assert counts[:8] == [0] * 8  # int(16 x 0.5) = 8 crops are masked, the rest not
    probs = np.linspace(0.1, 0.5, 9)
    for i, c in enumerate(counts[8:]):  # one count per stratum [probs[i], probs[i+1])
        assert int(n * probs[i]) <= c <= int(n * probs[i + 1])
    assert out["n_masked_patches"] == int(masks.sum()) == len(out["mask_indices"])
    assert out["masks_weight"].sum().item() == pytest.approx(8.0)  # each masked crop sums to 1
    assert out["upperbound"] == sum(int(n * p) for p in probs[1:])
    assert masks.flatten()[out["mask_indices"]].all()


def test_stratified_masks_order_is_shuffled() -> None:
    gen = MaskingGenerator3D((4, 4, 4))
    positions = {tuple(stratified_masks(4, gen, np.random.default_rng(s))["masks"].any(1).tolist()) for s in range(20)}
    assert len(positions) > 1


def test_no_masks_when_probability_is_zero() -> None:
    out = stratified_masks(6, MaskingGenerator3D((4, 4, 4)), np.random.default_rng(0), 0.0)
    assert out["n_masked_patches"] == 0 and not out["masks"].any()
