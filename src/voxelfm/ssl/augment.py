"""Multi-crop 3D augmentation with the original VoxelFM semantics (docs/original.md §2.3).

Volumes arrive in HU, shape (D, H, W), possibly memory-mapped: only the cropped region is read.
Every random draw comes from the ``numpy.random.Generator`` passed in, so one sample's crops are
a pure function of its seed (this is what makes resumed and distributed runs reproducible).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Size3 = tuple[int, int, int]

HIST_RANGE = (-1000.0, 1900.0)
HIST_BINS = 512


def resize(crop: torch.Tensor, size: Size3) -> torch.Tensor:
    """Trilinear resample of a (D, H, W) tensor to ``size`` (``align_corners=False``)."""
    if tuple(crop.shape) == tuple(size):
        return crop
    return F.interpolate(crop[None, None], size=tuple(size), mode="trilinear", align_corners=False)[0, 0]


@dataclass(frozen=True)
class RandomCrop3D:
    """Random-permutation, random-scale crop resampled to ``size``.

    1. a random permutation ``perm`` of the three axes assigns target side ``size[i]`` to input
       axis ``perm[i]`` (the identity when ``permute_axes`` is false);
    2. ``s ~ U(scale)`` is a *linear* fraction of the smallest input side: the crop keeps the
       target's aspect ratio and its smallest side is ``s * min(D, H, W)`` (shrunk, aspect kept,
       until every side fits; sides >= 1);
    3. a uniform random position;
    4. output axis ``i`` is input axis ``perm[i]``, trilinearly resampled to exactly ``size``.
    """

    size: Size3
    scale: tuple[float, float]
    permute_axes: bool = True

    def draw(self, shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, list[int], list[int]]:
        """(perm, crop sides per input axis, start per input axis) for a volume of ``shape``."""
        perm = rng.permutation(3)
        if not self.permute_axes:
            # Drawn and discarded: the scale drawn for each crop does not depend on this setting.
            perm = np.arange(3)
        target_in = [0, 0, 0]
        for out_axis, in_axis in enumerate(perm):
            target_in[in_axis] = self.size[out_axis]
        s = rng.uniform(self.scale[0], self.scale[1])
        ratio = s * min(shape) / min(self.size)
        sides = [ratio * t for t in target_in]
        fit = min(1.0, *(shape[a] / sides[a] for a in range(3)))
        sides = [max(1, min(int(shape[a]), int(round(sides[a] * fit)))) for a in range(3)]
        starts = [int(rng.integers(0, int(shape[a]) - sides[a] + 1)) for a in range(3)]
        return perm, sides, starts

    def __call__(self, volume: np.ndarray | torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        perm, sides, starts = self.draw(volume.shape, rng)
        region = volume[tuple(slice(b, b + n) for b, n in zip(starts, sides, strict=True))]
        crop = torch.as_tensor(np.asarray(region, dtype=np.float32)) if isinstance(region, np.ndarray) else region.float()
        crop = crop.permute(*[int(a) for a in perm]).contiguous()
        return resize(crop, self.size)


def random_flip(crop: torch.Tensor, rng: np.random.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each of the three axes independently with probability ``p``."""
    dims = [axis for axis in range(3) if rng.random() < p]
    return torch.flip(crop, dims) if dims else crop


def hu_percentiles(crop: torch.Tensor, qs: Sequence[float] = (0.01, 0.25, 0.5, 0.75, 0.99)) -> list[float]:
    """Percentiles from a 512-bin histogram over [-1000, 1900] HU (lower edge of the first bin
    whose CDF reaches q), as the original ``Window`` transform computes them."""
    lo, hi = HIST_RANGE
    hist = torch.histc(crop.float().clamp(lo, hi), bins=HIST_BINS, min=lo, max=hi)
    cdf = torch.cumsum(hist, 0) / hist.sum().clamp(min=1)
    edges = torch.linspace(lo, hi, HIST_BINS + 1)
    out = []
    for q in qs:
        idx = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)).clamp(max=HIST_BINS - 1))
        out.append(float(edges[idx]))
    return out


def random_window(crop: torch.Tensor, rng: np.random.Generator, p: float = 0.5) -> torch.Tensor:
    """With probability ``p`` clip the HU crop to a random window around its own intensity range:
    level ~ N(median, (0.2 IQR)^2), width ~ U(0.5 IQR, 2 IQR) (>= 10 HU)."""
    if rng.random() >= p:
        return crop
    p1, q1, median, q3, p99 = hu_percentiles(crop)
    iqr = q3 - q1
    if iqr < 1.0:
        iqr = max(p99 - p1, 1.0)
    level = rng.normal(median, 0.2 * iqr)
    width = max(rng.uniform(0.5 * iqr, 2.0 * iqr), 10.0)
    return crop.clamp(level - width / 2.0, level + width / 2.0)


def normalise(crop: torch.Tensor, lower: float, upper: float, mean: float, std: float) -> torch.Tensor:
    """Clip to the pixel range, then ``(x - mean) / std``."""
    return (crop.clamp(lower, upper) - mean) / std


@dataclass(frozen=True)
class MultiCropAugmentation:
    """2 global crops (flip; window on the first) + ``n_local`` local crops, all normalised."""

    global_size: Size3
    local_size: Size3
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    n_local: int = 8
    window_probability: float = 0.5
    flip_probability: float = 0.5
    permute_axes: bool = True
    pixel_range: tuple[float, float] = (-1000.0, 1900.0)
    norm: tuple[float, float] = (-573.8, 461.3)

    def _norm(self, crop: torch.Tensor) -> torch.Tensor:
        return normalise(crop, self.pixel_range[0], self.pixel_range[1], self.norm[0], self.norm[1])

    def __call__(self, volume: np.ndarray | torch.Tensor, rng: np.random.Generator) -> dict[str, list[torch.Tensor]]:
        global_crop = RandomCrop3D(tuple(self.global_size), tuple(self.global_scale), self.permute_axes)
        local_crop = RandomCrop3D(tuple(self.local_size), tuple(self.local_scale), self.permute_axes)
        g1 = random_flip(global_crop(volume, rng), rng, self.flip_probability)
        g1 = self._norm(random_window(g1, rng, self.window_probability))
        g2 = self._norm(random_flip(global_crop(volume, rng), rng, self.flip_probability))
        local = [self._norm(local_crop(volume, rng)) for _ in range(self.n_local)]
        return {"global_crops": [g1, g2], "local_crops": local}
