"""Segmentation through run_probe: labels on disk in their own geometry, masks written back."""

import numpy as np
import pandas as pd
import pytest

from voxelfm.core.geometry import Geometry
from voxelfm.probes import run_probe
from voxelfm.probes.data import FeatureSet


def _seg_cohort(tmp_path, n=40, dim=8, seed=0):
    from voxelfm.io import write_nifti

    rng = np.random.default_rng(seed)
    marker = rng.normal(size=(3, dim)) * 3
    ids, cls, grids, pgeo, igeo, paths = [], [], [], [], [], []
    (tmp_path / "labels").mkdir()
    for i in range(n):
        # Original label map: 24^3 at 1 mm. The backbone's input grid: 12^3 at 2 mm, same extent.
        orig = Geometry(shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0), origin=(10.0 * i, -5.0, 3.0))
        ig = orig.subgrid((0.5, 0.5, 0.5), (2, 2, 2), (12, 12, 12))
        pg = ig.subgrid((1.5, 1.5, 1.5), (4, 4, 4), (3, 3, 3))
        label = np.zeros(orig.shape, dtype=np.int16)
        tokens = rng.normal(size=(3, 3, 3, dim)).astype(np.float32)
        cells = rng.choice(27, size=2, replace=False)  # two different patches
        for cls_id, cell in zip((1, 2), cells, strict=True):
            k = np.unravel_index(cell, (3, 3, 3))
            label[tuple(slice(8 * a, 8 * a + 8) for a in k)] = cls_id  # one patch-sized block
            tokens[k] += marker[cls_id]
        path = tmp_path / "labels" / f"s{i}.nii.gz"
        write_nifti(label, orig, path)
        ids.append(f"s{i}")
        cls.append(tokens.mean((0, 1, 2)))
        grids.append(tokens)
        pgeo.append(pg)
        igeo.append(ig)
        paths.append(f"labels/s{i}.nii.gz")
    split = ["val"] * 4 + ["test"] * 4 + ["train"] * (n - 8)
    labels = pd.DataFrame({"scan_id": ids, "label_path": paths, "split": split})
    csv = tmp_path / "labels.csv"
    labels.to_csv(csv, index=False)
    return FeatureSet(ids, np.array(cls), grids, pgeo, igeo, model_id="synthetic"), csv


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_segmentation_probe_learns_and_writes_masks_in_original_geometry(tmp_path):
    from voxelfm.io import load_label_map

    feats, csv = _seg_cohort(tmp_path)
    out = tmp_path / "run"
    res = run_probe("segmentation", feats, csv, out_dir=out, config={
        "bootstrap": 50, "target_downsample": 2, "class_names": ["a", "b"],
        "head_params": {"hidden_dim": 32, "num_steps": 1, "min_channels": 32},
        "train": {"epochs": 20, "batch_size": 8, "lr": 1e-2, "threads": 1, "noise_p": 0.0}})
    assert res.metrics["dice_macro"].value > 0.6, res.metrics
    assert {"dice_micro", "dice/a", "dice/b"} <= set(res.metrics)
    mask, geom = load_label_map(out / "masks" / "s5_pred.nii.gz")
    truth, tgeom = load_label_map(tmp_path / "labels" / "s5.nii.gz")
    assert mask.shape == truth.shape
    np.testing.assert_allclose(geom.origin, tgeom.origin, atol=1e-4)
    np.testing.assert_allclose(geom.spacing, tgeom.spacing, atol=1e-6)
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert (out / "probe.safetensors").is_file() and (out / "metrics.json").is_file()
