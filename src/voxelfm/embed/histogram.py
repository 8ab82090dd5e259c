"""A non-learned baseline "backbone": HU histograms and simple intensity statistics.

What can a probe learn from the pixels without any network? :func:`histogram_features` turns a
preprocessed volume into :class:`voxelfm.core.types.VoxelFeatures` with the same layout as a
backbone's output, so every probe (MLP on the global vector, Q-Former on patch tokens,
localisation, segmentation, retrieval, report generation) runs on it unchanged:

* the global vector (``cls``) describes the whole preprocessed volume;
* each patch token describes the voxels of one patch of the backbone's patch grid
  (``patch_size`` voxels a side, the same grid and geometry a ViT with that patch size has);
* both use one feature definition (:data:`FEATURE_NAMES`): the fraction of voxels in each of
  :data:`HU_EDGES`' bins (air, lung, fat, soft tissue, contrast, bone, ...), then the mean,
  standard deviation and 5th/50th/95th percentiles of HU (in units of 1000 HU), then the log of
  the described volume in millilitres (the whole grid for ``cls``, one patch for a token).

Deterministic, no parameters to fit, a few milliseconds per scan.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxelfm.core.errors import ConfigError, InputValidationError
from voxelfm.core.types import VoxelFeatures
from voxelfm.preprocess.spec import PreprocessSpec

#: Bin edges in HU. Narrow bins where chest CT has its tissue classes (lung parenchyma, fat,
#: soft tissue, calcification); the first and last bins also take everything beyond the edges.
HU_EDGES: tuple[float, ...] = (
    -1000.0, -950.0, -900.0, -850.0, -800.0, -700.0, -600.0, -500.0, -400.0, -300.0, -200.0,
    -100.0, -50.0, 0.0, 30.0, 60.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0, 1900.0,
)

STATISTICS: tuple[str, ...] = ("mean_khu", "std_khu", "p05_khu", "p50_khu", "p95_khu", "log_volume_ml")

#: Names of the feature dimensions, in order.
FEATURE_NAMES: tuple[str, ...] = tuple(
    f"frac_{lo:g}_{hi:g}" for lo, hi in zip(HU_EDGES[:-1], HU_EDGES[1:], strict=True)
) + STATISTICS

#: Model id recorded in the embedding store (versioned with the feature definition).
MODEL_ID = f"hu-histogram-v1-{len(FEATURE_NAMES)}"


def _describe(values: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Features of each row of ``values`` (N, V) HU: bin fractions, statistics, log volume."""
    n, v = values.shape
    bins = np.clip(np.searchsorted(np.asarray(HU_EDGES[1:-1]), values, side="right"), 0, len(HU_EDGES) - 2)
    offsets = (np.arange(n)[:, None] * (len(HU_EDGES) - 1) + bins).ravel()
    counts = np.bincount(offsets, minlength=n * (len(HU_EDGES) - 1)).reshape(n, -1)
    khu = values / 1000.0
    q = np.percentile(khu, [5, 50, 95], axis=1).T
    stats = np.column_stack([khu.mean(1), khu.std(1), q, np.full(n, np.log(max(v * voxel_ml, 1e-6)))])
    return np.concatenate([counts / float(v), stats], axis=1).astype(np.float32)


def histogram_features(pre: Any, patch_size: int) -> VoxelFeatures:
    """Histogram features of a :class:`voxelfm.preprocess.PreprocessedVolume` on its patch grid.

    ``patch_size`` is the patch size of the backbones it is compared with, so the tokens sit on
    the same grid (and the same world positions) as theirs.
    """
    hu = np.asarray(pre.hu, dtype=np.float32)
    p = int(patch_size)
    d, h, w = (s // p for s in hu.shape)
    if min(d, h, w) < 1:
        raise InputValidationError(f"{pre.geometry.shape}: preprocessed volume is smaller than one patch ({p})")
    spacing = np.asarray(pre.geometry.spacing, dtype=float)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    grid = hu[: d * p, : h * p, : w * p].reshape(d, p, h, p, w, p).transpose(0, 2, 4, 1, 3, 5)
    tokens = _describe(grid.reshape(d * h * w, p**3), voxel_ml).reshape(d, h, w, -1)
    # The global vector: a random subsample of voxels keeps percentiles cheap on large grids
    # (fixed seed: the same scan always gives the same vector).
    flat = hu.reshape(1, -1)
    if flat.shape[1] > 2_000_000:
        idx = np.sort(np.random.default_rng(0).choice(flat.shape[1], 2_000_000, replace=False))
        sample = flat[:, idx]
        cls = _describe(sample, voxel_ml * flat.shape[1] / sample.shape[1])[0]
    else:
        cls = _describe(flat, voxel_ml)[0]
    start = ((p - 1) / 2.0,) * 3
    return VoxelFeatures(
        cls=cls,
        patch=np.ascontiguousarray(tokens, dtype=np.float32),
        registers=np.zeros((0, cls.shape[0]), dtype=np.float32),
        patch_geometry=pre.geometry.subgrid(start, (p, p, p), (d, h, w)),
        input_geometry=pre.geometry,
        spec=pre.spec,
        model_id=MODEL_ID,
        spec_fingerprint=pre.spec.fingerprint(),
        mode="3d",
    )


class HistogramBaseline:
    """The baseline as an embedder for :func:`voxelfm.embed.run_embeddings`: features of scans
    preprocessed with a VoxelFM ``spec``, tokens on that spec's patch grid (``spec.patch_size``).

    It has the parts of the backbone interface a batch run uses (``name``, ``model_id``, ``spec``,
    ``default_spec``, ``check_spec``, ``supports_slabs``) and :meth:`features` in place of a network.
    """

    name = "hu-histogram"
    model_id = MODEL_ID
    supports_slabs = False

    def __init__(self, spec: PreprocessSpec) -> None:
        self.check_spec(spec)
        self.spec = spec

    def default_spec(self) -> PreprocessSpec:
        return self.spec

    def check_spec(self, spec: Any) -> None:
        if not isinstance(spec, PreprocessSpec):
            raise ConfigError("the HU-histogram baseline needs a VoxelFM PreprocessSpec (its tokens sit on that "
                              f"spec's patch grid), got {type(spec).__name__}")

    def features(self, pre: Any) -> VoxelFeatures:
        """Histogram features of one preprocessed volume (always mode ``3d``)."""
        return histogram_features(pre, int(self.spec.patch_size))


__all__ = ["FEATURE_NAMES", "HU_EDGES", "MODEL_ID", "HistogramBaseline", "histogram_features"]
