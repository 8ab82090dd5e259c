"""DINO-style PCA maps of patch features: 3 principal components → RGB over a CT slice.

The picture shows what a backbone learned: fit a PCA on the patch tokens of the foreground (body)
of a few scans, map the first three components to red, green and blue, and draw the colours over
the CT. Patches of the same tissue get the same colour when the features separate tissues; a
random-init backbone gives colour noise that follows intensity only.

Colours are placed on the slice through world coordinates (patch centre geometry → slice voxel),
so they stay aligned whatever crop, resampling or patch size produced the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxelfm.core.errors import InputValidationError
from voxelfm.core.geometry import Geometry


@dataclass(frozen=True)
class PatchPCA:
    """A fitted projection of C-dim patch features to ``k`` components scaled into [0, 1]."""

    mean: np.ndarray  # (C,)
    components: np.ndarray  # (k, C)
    low: np.ndarray  # (k,) robust minimum of each component on the fitting data
    high: np.ndarray  # (k,) robust maximum
    explained_variance_ratio: np.ndarray  # (k,)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Project ``(..., C)`` features to ``(..., k)`` values clipped to [0, 1]."""
        feats = np.asarray(features, dtype=np.float64)
        if feats.shape[-1] != self.mean.shape[0]:
            raise InputValidationError(
                f"features have {feats.shape[-1]} channels; this PCA was fitted on {self.mean.shape[0]}"
            )
        proj = (feats - self.mean) @ self.components.T
        span = np.maximum(self.high - self.low, 1e-12)
        return np.clip((proj - self.low) / span, 0.0, 1.0).astype(np.float32)


def fit_patch_pca(
    patches: Sequence[np.ndarray], *, foreground: Sequence[np.ndarray] | None = None,
    n_components: int = 3, max_samples: int = 50_000, seed: int = 0, percentile: float = 1.0,
) -> PatchPCA:
    """Fit a PCA on the (foreground) patch tokens of one or more ``(d, h, w, C)`` grids.

    Fitting several scans jointly keeps colours comparable between them. Each component is scaled
    with its ``percentile`` / ``100 - percentile`` values so a few outliers do not wash out the map.
    """
    from sklearn.decomposition import PCA

    if not patches:
        raise InputValidationError("fit_patch_pca needs at least one patch grid")
    rows = []
    for i, grid in enumerate(patches):
        g = np.asarray(grid)
        if g.ndim != 4:
            raise InputValidationError(f"patch grid {i} must be (d, h, w, C), got shape {g.shape}")
        flat = g.reshape(-1, g.shape[-1])
        if foreground is not None:
            mask = np.asarray(foreground[i], dtype=bool)
            if mask.shape != g.shape[:3]:
                raise InputValidationError(
                    f"foreground mask {i} has shape {mask.shape}, patch grid is {g.shape[:3]}"
                )
            flat = flat[mask.reshape(-1)]
        rows.append(flat)
    data = np.concatenate(rows).astype(np.float64)
    channels = data.shape[1] if data.ndim == 2 else 0
    if data.shape[0] < n_components + 1 or channels < n_components:
        raise InputValidationError(
            f"too few foreground patches ({data.shape[0]}) or channels ({channels}) for a "
            f"{n_components}-component PCA"
        )
    rng = np.random.default_rng(seed)
    if data.shape[0] > max_samples:
        data = data[rng.choice(data.shape[0], size=max_samples, replace=False)]
    pca = PCA(n_components=n_components, random_state=seed).fit(data)
    proj = pca.transform(data)
    # Fix each component's sign (largest loading positive) so colours do not flip between runs.
    signs = np.sign(pca.components_[np.arange(n_components), np.abs(pca.components_).argmax(axis=1)])
    signs[signs == 0] = 1.0
    components = pca.components_ * signs[:, None]
    proj = proj * signs[None, :]
    return PatchPCA(
        mean=pca.mean_.copy(),
        components=components,
        low=np.percentile(proj, percentile, axis=0),
        high=np.percentile(proj, 100.0 - percentile, axis=0),
        explained_variance_ratio=pca.explained_variance_ratio_.copy(),
    )


def slice_index_grid(target: Geometry, axis: str, index: int) -> np.ndarray:
    """Continuous (z, y, x) indices of every voxel of one slice of ``target``: (H, W, 3).

    Rows/columns follow :func:`voxelfm.viz.slices.take_slice` (superior at the top).
    """
    d, h, w = target.shape
    if axis == "axial":
        jj, ii = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        kk = np.full_like(jj, index)
    elif axis == "coronal":
        kk, ii = np.meshgrid(np.arange(d)[::-1], np.arange(w), indexing="ij")
        jj = np.full_like(kk, index)
    elif axis == "sagittal":
        kk, jj = np.meshgrid(np.arange(d)[::-1], np.arange(h), indexing="ij")
        ii = np.full_like(kk, index)
    else:
        raise InputValidationError(f"unknown axis {axis!r}")
    return np.stack([kk, jj, ii], axis=-1).astype(np.float64)


def sample_grid_on_slice(
    values: np.ndarray, grid_geometry: Geometry, target: Geometry, *, axis: str = "axial",
    index: int | None = None, order: int = 1,
) -> np.ndarray:
    """Sample ``(d, h, w, K)`` values on a coarse grid at the voxels of one slice of ``target``.

    Both geometries are in world space, so this upsamples a patch grid onto the CT it came from
    (trilinear with ``order=1``; values outside the grid take the nearest edge value).
    """
    from scipy.ndimage import map_coordinates

    vals = np.asarray(values, dtype=np.float32)
    if vals.ndim == 3:
        vals = vals[..., None]
    if vals.shape[:3] != tuple(grid_geometry.shape):
        raise InputValidationError(
            f"values grid {vals.shape[:3]} does not match its geometry shape {grid_geometry.shape}"
        )
    axis_dim = {"axial": 0, "coronal": 1, "sagittal": 2}.get(axis)
    if axis_dim is None:
        raise InputValidationError(f"unknown axis {axis!r}")
    idx = target.shape[axis_dim] // 2 if index is None else int(index)
    target_idx = slice_index_grid(target, axis, idx)
    world = target.index_to_world(target_idx)
    grid_idx = grid_geometry.world_to_index(world)
    coords = np.moveaxis(grid_idx, -1, 0)
    out = np.stack(
        [map_coordinates(vals[..., c], coords, order=order, mode="nearest") for c in range(vals.shape[-1])],
        axis=-1,
    )
    return out


def body_mask(hu_slice: np.ndarray, threshold_hu: float = -200.0) -> np.ndarray:
    """Body (with lungs) of a HU slice: tissue above ``threshold_hu`` with holes filled.

    -200 HU keeps fat (about -100) but drops foam mattresses (about -250), which would otherwise
    connect the body to the scanner table.
    """
    from scipy.ndimage import binary_fill_holes, label

    tissue = np.asarray(hu_slice) > threshold_hu
    labelled, n = label(tissue)
    if n == 0:
        return tissue
    # The body is the largest connected component (drops the table and small blobs).
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return binary_fill_holes(labelled == int(sizes.argmax()))


def patch_foreground(
    hu: np.ndarray, hu_geometry: Geometry, patch_geometry: Geometry, threshold_hu: float = -200.0,
) -> np.ndarray:
    """Boolean ``(d, h, w)``: which patch centres fall inside the body of the HU volume."""
    mask = np.stack([body_mask(s, threshold_hu) for s in np.asarray(hu)]).astype(np.float32)
    centres = patch_geometry.voxel_centres_world()
    idx = np.rint(hu_geometry.world_to_index(centres)).astype(np.int64)
    for dim, n in enumerate(mask.shape):
        idx[..., dim] = np.clip(idx[..., dim], 0, n - 1)
    return mask[idx[..., 0], idx[..., 1], idx[..., 2]] > 0.5
