"""Multi-crop semantics (docs/original.md §2.3): axis permutation, linear scale, trilinear resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voxelfm.ssl.augment import (
    MultiCropAugmentation,
    RandomCrop3D,
    hu_percentiles,
    normalise,
    random_flip,
    random_window,
)


def test_crop_has_exact_target_size_even_when_anisotropic() -> None:
    vol = np.random.default_rng(0).normal(size=(30, 40, 50)).astype(np.float32)
    crop = RandomCrop3D((8, 12, 16), (0.3, 1.0))(vol, np.random.default_rng(1))
    assert crop.shape == (8, 12, 16) and crop.dtype == torch.float32


def test_scale_is_a_linear_fraction_of_the_smallest_side() -> None:
    crop = RandomCrop3D((10, 20, 10), (0.5, 0.5))
    for seed in range(20):
        perm, sides, starts = crop.draw((60, 80, 100), np.random.default_rng(seed))
        assert sorted(sides) == [30, 30, 60]  # smallest side 0.5 x 60, target aspect kept
        assert sides[perm[1]] == 60  # the long target side (output axis 1) sits on input axis perm[1]
        assert all(b >= 0 and b + n <= s for b, n, s in zip(starts, sides, (60, 80, 100), strict=True))


def test_crop_is_shrunk_with_aspect_kept_when_it_does_not_fit() -> None:
    crop = RandomCrop3D((10, 40, 10), (1.0, 1.0))
    for seed in range(30):
        perm, sides, _ = crop.draw((20, 100, 100), np.random.default_rng(seed))
        assert all(n <= s for n, s in zip(sides, (20, 100, 100), strict=True))
        assert sides[perm[1]] == 4 * sides[perm[0]] == 4 * sides[perm[2]]


def test_output_axes_are_a_random_permutation_of_input_axes() -> None:
    z = np.arange(24, dtype=np.float32)[:, None, None]
    vol = np.broadcast_to(z, (24, 24, 24)).copy()  # varies along input z only
    crop = RandomCrop3D((6, 6, 6), (1.0, 1.0))
    counts = np.zeros(3)
    for seed in range(300):
        out = crop(vol, np.random.default_rng(seed))
        variances = [float(out.float().var(dim=ax).mean()) for ax in range(3)]
        counts[int(np.argmax(variances))] += 1
    assert np.all(counts / counts.sum() > 0.25), counts  # ~1/3 each


def test_axis_permutation_can_be_switched_off() -> None:
    fixed = RandomCrop3D((10, 20, 10), (0.3, 0.9), permute_axes=False)
    for seed in range(20):
        perm, _, _ = fixed.draw((60, 80, 100), np.random.default_rng(seed))
        assert list(perm) == [0, 1, 2]
    aug = MultiCropAugmentation(global_size=(6, 8, 10), local_size=(4, 4, 4), n_local=1, permute_axes=False,
                                flip_probability=0.0, window_probability=0.0)
    z = np.broadcast_to(np.arange(30, dtype=np.float32)[:, None, None], (30, 30, 30)).copy()
    crops = aug(z, np.random.default_rng(3))
    for crop in crops["global_crops"]:
        assert float(crop.var(dim=(1, 2)).max()) < 1e-8  # input z still varies along output axis 0 only


def test_crop_equals_trilinear_resample_of_permuted_region() -> None:
    vol = np.random.default_rng(0).normal(size=(20, 26, 32)).astype(np.float32)
    crop = RandomCrop3D((9, 11, 13), (0.4, 0.9))
    got = crop(vol, np.random.default_rng(7))
    perm, sides, starts = crop.draw(vol.shape, np.random.default_rng(7))
    region = torch.from_numpy(vol[tuple(slice(b, b + n) for b, n in zip(starts, sides, strict=True))])
    region = region.permute(*[int(a) for a in perm])
    expected = F.interpolate(region[None, None], size=(9, 11, 13), mode="trilinear", align_corners=False)[0, 0]
    assert torch.allclose(got, expected)


def test_crop_reads_memory_mapped_volumes(tmp_path) -> None:
    np.save(tmp_path / "v.npy", np.arange(8000, dtype=np.int16).reshape(20, 20, 20))
    vol = np.load(tmp_path / "v.npy", mmap_mode="r")
    assert RandomCrop3D((5, 5, 5), (0.5, 1.0))(vol, np.random.default_rng(0)).shape == (5, 5, 5)


def test_flip_probability_extremes() -> None:
    x = torch.arange(8.0).reshape(2, 2, 2)
    assert torch.equal(random_flip(x, np.random.default_rng(0), p=0.0), x)
    assert torch.equal(random_flip(x, np.random.default_rng(0), p=1.0), torch.flip(x, (0, 1, 2)))


def test_window_clips_around_the_crop_intensities() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-900, 900, size=(30, 30, 30)).astype(np.float32))
    assert torch.equal(random_window(x, rng, p=0.0), x)
    p1, q1, median, q3, p99 = hu_percentiles(x)
    assert q1 == pytest.approx(-450, abs=20) and median == pytest.approx(0, abs=20) and q3 == pytest.approx(450, abs=20)
    out = random_window(x, np.random.default_rng(3), p=1.0)
    assert float(out.max() - out.min()) <= 2 * (q3 - q1) + 1e-3
    assert float(out.max() - out.min()) >= min(10.0, float(x.max() - x.min())) - 1e-3


def test_normalise_clips_then_standardises() -> None:
    x = torch.tensor([-3000.0, -573.8, 5000.0])
    assert torch.allclose(normalise(x, -1000, 1900, -573.8, 461.3), torch.tensor([(-1000 + 573.8) / 461.3, 0.0, (1900 + 573.8) / 461.3]))


def test_multicrop_views() -> None:
    vol = np.random.default_rng(0).normal(0, 300, size=(30, 30, 30)).astype(np.float32)
    aug = MultiCropAugmentation(global_size=(14, 14, 28), local_size=(7, 7, 7), n_local=3)
    out = aug(vol, np.random.default_rng(0))
    assert [tuple(c.shape) for c in out["global_crops"]] == [(14, 14, 28)] * 2
    assert [tuple(c.shape) for c in out["local_crops"]] == [(7, 7, 7)] * 3
    again = aug(vol, np.random.default_rng(0))
    assert all(torch.equal(a, b) for a, b in zip(out["local_crops"], again["local_crops"], strict=True))  # seeded
