"""Each preprocessing step against numbers computed by hand (docs/original.md §3.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelfm.core import InputValidationError
from voxelfm.preprocess import (
    clip_hu,
    crop_background,
    crop_to_patch_multiple,
    fit_patch_budget,
    foreground_box,
    isotropic_size,
    n_patches,
    normalise,
    patch_budget_size,
    resample_isotropic,
    resize_trilinear,
)


def test_clip_hu_training_window():
    out = clip_hu(np.array([-3024.0, -1000.0, 0.0, 1900.0, 3071.0]))
    np.testing.assert_array_equal(out, [-1000.0, -1000.0, 0.0, 1900.0, 1900.0])
    assert out.dtype == np.float32


def test_normalise_constants():
    out = normalise(np.array([-573.8, -112.5, -1035.1], dtype=np.float32))
    np.testing.assert_allclose(out, [0.0, 1.0, -1.0], atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "spacing", "expected_size", "expected_target"),
    [
        ((10, 20, 30), (2.0, 0.5, 0.9), (27, 13, 36), 0.75),  # 26.67->27, 13.33->13, 36
        ((10, 20, 30), (3.0, 1.2, 1.0), (30, 24, 30), 1.0),  # finest spacing 1.0 mm is the target
        ((5, 8, 8), (0.375, 1.0, 1.0), (2, 11, 11), 0.75),  # 2.5 rounds half to even -> 2; 10.67->11
        ((7, 9, 11), (0.5, 0.5, 0.5), (7, 9, 11), 0.5),  # already isotropic: untouched, even < 0.75
    ],
)
def test_isotropic_size_rounding(shape, spacing, expected_size, expected_target):
    size, target = isotropic_size(shape, spacing)
    assert size == expected_size and target == pytest.approx(expected_target)


def test_resample_isotropic_matches_torch_and_reports_exact_spacing():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(6, 10, 12)).astype(np.float32)
    out, spacing = resample_isotropic(array, (2.0, 0.8, 0.75))
    assert out.shape == (16, 11, 12)  # round(16), round(10.67), round(12)
    ref = torch.nn.functional.interpolate(torch.from_numpy(array)[None, None], size=(16, 11, 12),
                                          mode="trilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_array_equal(out, ref)
    assert spacing == pytest.approx((2.0 * 6 / 16, 0.8 * 10 / 11, 0.75))


def test_patch_budget_reference_example():
    """400 x 512 x 512 at p 14 and 25,000 patches -> 346 x 443 x 443 (docs/original.md §3.2)."""
    size = patch_budget_size((400, 512, 512), 14, 25000)
    assert size == (346, 443, 443)
    assert n_patches(size, 14) == 23064  # 24 * 31 * 31; 0.98 ties with 0.99 and the first wins


def test_patch_budget_cases():
    assert patch_budget_size((100, 100, 100), 14, 25000) == (100, 100, 100)  # within budget
    assert patch_budget_size((100, 100, 100), 14, None) == (100, 100, 100)
    # 42^3 = 27 patches, budget 8: r = 2/3; 42 r in float is 27.999..., so 1.00 gives 27 (1 patch)
    # and 1.01 gives 28 (8 patches) -> the most patches within budget.
    assert patch_budget_size((42, 42, 42), 14, 8) == (28, 28, 28)
    # No candidate fits (each has 3 patches > 2): the original falls back to 0.95 r, which may
    # still exceed a tiny budget; kept for identical features.
    assert patch_budget_size((20, 20, 59), 14, 2) == (15, 15, 44)


def test_fit_patch_budget_resizes_trilinearly():
    array = np.arange(42**3, dtype=np.float32).reshape(42, 42, 42)
    out = fit_patch_budget(array, 14, 8)
    assert out.shape == (28, 28, 28)
    np.testing.assert_array_equal(out, resize_trilinear(array, (28, 28, 28)))


def test_crop_to_patch_multiple_offsets():
    array = np.arange(30 * 17 * 14, dtype=np.float32).reshape(30, 17, 14)
    out, box = crop_to_patch_multiple(array, 14)
    # remainders 2, 3, 0 -> m // 2 = 1, 1, 0 before; the rest after.
    assert box == ((1, 29), (1, 15), (0, 14))
    np.testing.assert_array_equal(out, array[1:29, 1:15, :])
    with pytest.raises(InputValidationError, match="smaller than one 14-voxel patch"):
        crop_to_patch_multiple(np.zeros((13, 20, 20), np.float32), 14)


def _reference_box(array, threshold, k):
    fg = torch.from_numpy((array > threshold).astype(np.float32))[None, None]
    counts = torch.nn.functional.conv3d(fg, torch.ones(1, 1, k, k, k), padding="same")[0, 0].numpy()
    mask = counts > 0.5 * k**3
    if not mask.any():
        return None
    box = []
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


@pytest.mark.parametrize("k", [3, 5, 9, 21])
@pytest.mark.parametrize("seed", [0, 1])
def test_foreground_box_equals_same_padded_conv3d(k, seed):
    rng = np.random.default_rng(seed)
    array = np.full((30, 34, 38), -1000.0, dtype=np.float32)
    for _ in range(4):  # random overlapping blocks of tissue, plus speckle noise
        lo = rng.integers(0, 20, 3)
        hi = lo + rng.integers(4, 18, 3)
        array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 50.0
    array[rng.random(array.shape) < 0.05] = 100.0
    assert foreground_box(array, -800.0, k) == _reference_box(array, -800.0, k)


def test_crop_background_hand_case():
    """A solid 30^3 block: face voxels see 11 x 21 x 21 = 4851 > 4630.5 foreground voxels, so the
    mask is the block itself; the box is widened by 21 // 2 = 10 and clamped to the volume."""
    array = np.full((40, 50, 60), -1000.0, dtype=np.float32)
    array[5:35, 12:42, 25:55] = 30.0
    cropped, box = crop_background(array, -800.0, 21)
    assert box == ((0, 40), (2, 50), (15, 60))
    assert cropped.shape == (40, 48, 45)
    # A threshold is strict: -800 exactly is background.
    array[5:35, 12:42, 25:55] = -800.0
    with pytest.raises(InputValidationError, match="no body"):
        crop_background(array, -800.0, 21, source="scan.nii")


def test_crop_background_ignores_thin_table():
    array = np.full((40, 70, 60), -1000.0, dtype=np.float32)
    array[5:35, 10:40, 10:50] = 40.0  # body
    array[:, 55:58, :] = 200.0  # a 3-voxel-thick table 15 voxels below: never a majority in 21^3
    _, box = crop_background(array, -800.0, 21)
    assert box == ((0, 40), (0, 50), (0, 60))
