"""The non-learned HU-histogram baseline: same layout as backbone features, exact and stable."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.core.errors import InputValidationError
from voxelfm.core.geometry import Geometry
from voxelfm.embed.histogram import FEATURE_NAMES, HU_EDGES, MODEL_ID, histogram_features
from voxelfm.preprocess import PreprocessSpec


class _Pre:
    """The three attributes histogram_features reads from a PreprocessedVolume."""

    def __init__(self, hu: np.ndarray, spacing: float = 2.0) -> None:
        self.hu = hu
        self.geometry = Geometry(shape=hu.shape, spacing=(spacing,) * 3, origin=(0.0, 0.0, 0.0))
        self.spec = PreprocessSpec(patch_size=4, max_patches=None)


def test_tokens_sit_on_the_patch_grid_and_describe_their_voxels() -> None:
    hu = np.full((8, 8, 12), -1000.0, dtype=np.float32)  # air everywhere ...
    hu[:4, :4, :4] = 40.0  # ... but one patch of soft tissue
    feats = histogram_features(_Pre(hu), patch_size=4)
    assert feats.patch.shape == (2, 2, 3, len(FEATURE_NAMES))
    assert feats.cls.shape == (len(FEATURE_NAMES),) and feats.registers.shape == (0, len(FEATURE_NAMES))
    assert feats.model_id == MODEL_ID and feats.mode == "3d"
    assert feats.patch_geometry is not None and feats.patch_geometry.shape == (2, 2, 3)
    n_bins = len(HU_EDGES) - 1
    soft = feats.patch[0, 0, 0]
    assert soft[:n_bins].sum() == pytest.approx(1.0)
    assert soft[FEATURE_NAMES.index("frac_30_60")] == pytest.approx(1.0)
    assert soft[FEATURE_NAMES.index("mean_khu")] == pytest.approx(0.04)
    air = feats.patch[1, 1, 2]
    assert air[FEATURE_NAMES.index("frac_-1000_-950")] == pytest.approx(1.0)
    assert air[FEATURE_NAMES.index("std_khu")] == pytest.approx(0.0)
    # The global vector covers the whole volume: 1 of 12 patches is soft tissue.
    assert feats.cls[FEATURE_NAMES.index("frac_30_60")] == pytest.approx(1 / 12)
    assert feats.cls[FEATURE_NAMES.index("log_volume_ml")] == pytest.approx(np.log(8 * 8 * 12 * 8 / 1000))
    again = histogram_features(_Pre(hu), patch_size=4)
    np.testing.assert_array_equal(again.patch, feats.patch)


def test_volume_smaller_than_a_patch_is_a_clear_error() -> None:
    with pytest.raises(InputValidationError, match="smaller than one patch"):
        histogram_features(_Pre(np.zeros((2, 8, 8), dtype=np.float32)), patch_size=4)
