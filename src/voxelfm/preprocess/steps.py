"""The individual preprocessing steps of the original VoxelFM pipeline (docs/original.md §3.2).

Each function works on a plain (z, y, x) float array and can be used alone. The numerics match
the original: ``>`` thresholds, Python ``round`` for isotropic sizes, ``int`` truncation for the
patch-budget sizes, trilinear interpolation with ``align_corners=False``.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from voxelfm.core.errors import InputValidationError, located

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
BUDGET_FACTORS = (0.98, 0.99, 1.00, 1.01, 1.02)
BUDGET_FALLBACK = 0.95


def clip_hu(array: np.ndarray, hu_min: float = -1000.0, hu_max: float = 1900.0) -> np.ndarray:
    """Clip to the training HU window (applied to every input type, unlike the original)."""
    return np.clip(np.asarray(array, dtype=np.float32), np.float32(hu_min), np.float32(hu_max))


def _box_sum_2d(plane: np.ndarray, radius: int) -> np.ndarray:
    """Number of True pixels in each (2r+1)^2 window, zero padding outside (exact integers)."""
    h, w = plane.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int32)
    np.cumsum(np.cumsum(plane, axis=0, dtype=np.int32), axis=1, out=integral[1:, 1:])
    lo_y = np.maximum(np.arange(h) - radius, 0)
    hi_y = np.minimum(np.arange(h) + radius + 1, h)
    lo_x = np.maximum(np.arange(w) - radius, 0)
    hi_x = np.minimum(np.arange(w) + radius + 1, w)
    top, bottom = integral[lo_y], integral[hi_y]
    return bottom[:, hi_x] - top[:, hi_x] - bottom[:, lo_x] + top[:, lo_x]


def foreground_box(array: np.ndarray, threshold: float = -800.0, kernel: int = 21) -> Box | None:
    """Bounding box (start, stop) per axis of the majority-filtered foreground, or None if empty.

    Equivalent to the original ``conv3d(ones(k^3), padding="same")`` on ``array > threshold``
    with zero padding, keeping voxels whose count exceeds ``0.5 * k^3``. Computed slab by slab
    with integral images and a running sum along z, so memory is O(k * H * W) and counts exact.
    The box is not yet expanded by the margin.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
    r = kernel // 2
    half = 0.5 * kernel**3
    depth, height, width = array.shape
    planes: deque[np.ndarray] = deque()
    running = np.zeros((height, width), dtype=np.int32)

    def plane(z: int) -> np.ndarray:
        return _box_sum_2d(array[z] > threshold, r)

    for z in range(min(r + 1, depth)):
        p = plane(z)
        planes.append(p)
        running += p
    z_hit: list[int] = []
    rows = np.zeros(height, dtype=bool)
    cols = np.zeros(width, dtype=bool)
    for z in range(depth):
        mask = running > half
        if mask.any():
            z_hit.append(z)
            rows |= mask.any(axis=1)
            cols |= mask.any(axis=0)
        # Slide the z-window [z - r, z + r] to [z + 1 - r, z + 1 + r].
        if z + r + 1 < depth:
            p = plane(z + r + 1)
            planes.append(p)
            running += p
        if z - r >= 0:
            running -= planes.popleft()
    if not z_hit:
        return None
    ys, xs = np.flatnonzero(rows), np.flatnonzero(cols)
    return ((z_hit[0], z_hit[-1] + 1), (int(ys[0]), int(ys[-1]) + 1), (int(xs[0]), int(xs[-1]) + 1))


def check_finite_hu(array: np.ndarray, source: object = None) -> None:
    """Refuse NaN/inf voxels (clipping would turn inf into a plausible HU and keep NaN)."""
    if array.size and not (np.isfinite(np.min(array)) and np.isfinite(np.max(array))):
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputValidationError(located(source, f"volume holds {n_bad} NaN/inf voxels: refusing to preprocess it"))


def check_large_enough(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], *, patch_size: int = 14,
    min_spacing: float = 0.75, isotropic: bool = True, crop_kernel: int | None = 21, source: object = None,
) -> None:
    """Refuse a volume too small to give one patch: a single 2D slice, or a few voxels.

    Every later step only shrinks the volume, so a volume that fails here would fail anyway, with
    a message about the step where it ran out ("background crop found no body", "smaller than one
    patch"); this says what is wrong with the input instead.
    """
    shape = tuple(int(n) for n in shape)
    extent = " x ".join(f"{n * s:.3g}" for n, s in zip(shape, spacing, strict=True))
    what = f"volume of {shape} voxels ({extent} mm)"
    if min(shape) == 1:
        raise InputValidationError(located(source, f"{what} is a single 2D slice: too small to embed (a 3D volume of at "
                                           f"least {patch_size} voxels per axis after resampling is needed)"))
    size = isotropic_size(shape, spacing, min_spacing)[0] if isotropic else shape
    if min(size) < patch_size:
        raise InputValidationError(located(source, f"{what} is too small: {tuple(size)} voxels after resampling, fewer "
                                           f"than one {patch_size}-voxel patch along an axis"))
    if crop_kernel is not None:
        best = int(np.prod([min(n, crop_kernel) for n in shape]))
        if best <= 0.5 * crop_kernel**3:
            raise InputValidationError(located(source, f"{what} is too small for the background crop: no "
                                               f"{crop_kernel}^3 neighbourhood can be mostly body (at most {best} voxels "
                                               f"of {crop_kernel**3}); disable crop_background for such small inputs"))


def crop_background(
    array: np.ndarray, threshold: float = -800.0, kernel: int = 21, *, source: object = None,
) -> tuple[np.ndarray, Box]:
    """Crop air/table around the body: majority-filtered foreground box, widened by ``kernel // 2``.

    Returns the cropped array (a view) and the box ``((z0, z1), (y0, y1), (x0, x1))``.
    """
    box = foreground_box(array, threshold, kernel)
    if box is None:
        raise InputValidationError(
            located(source, f"background crop found no body: no {kernel}^3 neighbourhood is mostly above {threshold:g} HU")
        )
    margin = kernel // 2
    box = tuple((max(a - margin, 0), min(b + margin, n)) for (a, b), n in zip(box, array.shape, strict=True))
    (z0, z1), (y0, y1), (x0, x1) = box
    return array[z0:z1, y0:y1, x0:x1], box  # type: ignore[return-value]


def resize_trilinear(array: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)`` on a 3D array."""
    import torch
    import torch.nn.functional as F

    size = tuple(int(s) for s in size)
    if size == tuple(array.shape):
        return np.asarray(array, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    with torch.no_grad():
        out = F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def isotropic_size(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], min_spacing: float = 0.75,
) -> tuple[tuple[int, int, int], float]:
    """Target size and spacing of the isotropic resample.

    As the original: an already isotropic volume is left alone (even below ``min_spacing``);
    otherwise target ``t = max(min(spacing), min_spacing)`` and size ``round(n * s / t)`` (Python
    rounding, half to even).
    """
    if np.allclose(spacing, spacing[0], rtol=1e-6, atol=0.0):
        return tuple(int(n) for n in shape), float(spacing[0])  # type: ignore[return-value]
    target = max(min(spacing), min_spacing)
    size = tuple(max(1, round(n * s / target)) for n, s in zip(shape, spacing, strict=True))
    return size, float(target)  # type: ignore[return-value]


def resample_isotropic(
    array: np.ndarray, spacing: tuple[float, float, float], min_spacing: float = 0.75,
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Resample to isotropic voxels; returns the array and its exact spacing ``s * n / n_new``."""
    size, _ = isotropic_size(array.shape, spacing, min_spacing)
    out = resize_trilinear(array, size)
    new_spacing = tuple(s * n / m for s, n, m in zip(spacing, array.shape, size, strict=True))
    return out, new_spacing  # type: ignore[return-value]


def n_patches(shape: tuple[int, ...], patch_size: int) -> int:
    """Number of whole patches: ``prod(n_i // p)``."""
    return int(np.prod([n // patch_size for n in shape]))


def patch_budget_size(shape: tuple[int, int, int], patch_size: int, max_patches: int | None) -> tuple[int, int, int]:
    """Size after the patch budget: unchanged if within budget, else the best scaled candidate.

    ``r = (max_patches / n)^(1/3)``; candidates ``r * (0.98, 0.99, 1.00, 1.01, 1.02)`` with sizes
    ``int(n_i * r')``; keep the first one with the most patches within the budget, else ``0.95 r``.
    Example: 400x512x512, p 14, 25,000 -> 346x443x443 (23,064 patches).
    """
    shape = tuple(int(n) for n in shape)
    count = n_patches(shape, patch_size)
    if max_patches is None or count <= max_patches:
        return shape  # type: ignore[return-value]
    r = (max_patches / count) ** (1.0 / 3.0)
    best, best_count = None, -1
    for factor in BUDGET_FACTORS:
        size = tuple(int(n * r * factor) for n in shape)
        c = n_patches(size, patch_size)
        if best_count < c <= max_patches:
            best, best_count = size, c
    if best is None:
        best = tuple(int(n * r * BUDGET_FALLBACK) for n in shape)
    return best  # type: ignore[return-value]


def fit_patch_budget(array: np.ndarray, patch_size: int = 14, max_patches: int | None = 25000) -> np.ndarray:
    """Trilinearly shrink the whole volume (isotropy kept) until it has at most ``max_patches``."""
    return resize_trilinear(array, patch_budget_size(array.shape, patch_size, max_patches))


def patch_crop_box(shape: tuple[int, int, int], patch_size: int) -> Box:
    """Centre-crop box to the largest multiple of p per axis (remainder m: m // 2 before)."""
    box = []
    for n in shape:
        m = n % patch_size
        box.append((m // 2, m // 2 + n - m))
    return tuple(box)  # type: ignore[return-value]


def crop_to_patch_multiple(array: np.ndarray, patch_size: int = 14, *, source: object = None) -> tuple[np.ndarray, Box]:
    """Centre crop each axis to a multiple of ``patch_size``; returns the view and its box."""
    if min(array.shape) < patch_size:
        raise InputValidationError(
            located(source, f"volume {tuple(array.shape)} is smaller than one {patch_size}-voxel patch along an axis")
        )
    box = patch_crop_box(array.shape, patch_size)
    (z0, z1), (y0, y1), (x0, x1) = box
    return array[z0:z1, y0:y1, x0:x1], box


def normalise(array: np.ndarray, mean: float = -573.8, std: float = 461.3) -> np.ndarray:
    """``(x - mean) / std`` in float32 (defaults: the original's CT statistics)."""
    return ((np.asarray(array, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)
