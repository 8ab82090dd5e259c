import numpy as np
import pandas as pd
import pytest

from voxelfm.core.errors import DataError, StoreError
from voxelfm.core.types import VoxelFeatures
from voxelfm.probes.data import (
    FeatureSet,
    assemble,
    check_patient_leak,
    read_labels,
    read_split_dir,
    resolve_splits,
)


def test_read_labels_errors_name_the_file(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("id,finding\na,1\n")
    with pytest.raises(DataError, match=r"labels\.csv: no id column"):
        read_labels(bad)
    bad.write_text("scan_id,finding\na,1\na,0\n")
    with pytest.raises(DataError, match="duplicated"):
        read_labels(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_labels(tmp_path / "missing.csv")
    good = tmp_path / "ok.csv"
    good.write_text("series_uid,finding\n001,1\n002,0\n")
    df = read_labels(good)
    assert list(df.index) == ["001", "002"]  # ids stay strings: leading zeros survive


def test_splits_from_column_dir_and_patient_level(tmp_path, cohort):
    _, labels = cohort
    df = read_labels(labels)
    from_col = resolve_splits(df)
    assert set(from_col) == {"train", "val", "test"}
    for name, part in (("train", "train"), ("valid", "val"), ("test", "test")):
        pd.DataFrame({"scan_id": df.index[from_col == part]}).to_csv(tmp_path / f"{name}.csv", index=False)
    from_dir = resolve_splits(df, split_dir=tmp_path)
    pd.testing.assert_series_equal(from_dir.rename(None), from_col.rename(None), check_names=False)
    made = resolve_splits(df.drop(columns="split"), split_column="split", seed=3)
    assert set(made) == {"train", "val", "test"}
    # Patient-level: no patient's scans straddle two splits.
    per_patient = pd.DataFrame({"p": df["patient_id"], "s": made}).groupby("p")["s"].nunique()
    assert per_patient.max() == 1
    assert df["patient_id"].duplicated().any()  # the cohort does have patients with several scans


def test_leaking_split_is_rejected(cohort):
    _, labels = cohort
    df = read_labels(labels)
    dup_patient = df["patient_id"][df["patient_id"].duplicated()].iloc[0]
    rows = df.index[df["patient_id"] == dup_patient]
    leaky = df.copy()
    leaky.loc[rows[0], "split"] = "train"
    leaky.loc[rows[1], "split"] = "test"
    with pytest.raises(DataError, match="more than one split"):
        resolve_splits(leaky)
    with pytest.raises(DataError, match="leaks"):
        check_patient_leak(leaky, leaky["split"])


def test_split_dir_rejects_overlap(tmp_path):
    for name, ids in (("train", ["a", "b"]), ("val", ["b"]), ("test", ["c"])):
        pd.DataFrame({"scan_id": ids}).to_csv(tmp_path / f"{name}.csv", index=False)
    with pytest.raises(DataError, match="both train and val"):
        read_split_dir(tmp_path)


def test_assemble_reports_dropped_scans(cohort):
    feats, labels = cohort
    df = read_labels(labels)
    df.loc[df.index[:5], "age"] = np.nan
    extra = pd.DataFrame({"scan_id": ["ghost1", "ghost2"], "split": ["train", "test"], "age": [1.0, 2.0]})
    df = read_labels(pd.concat([df.reset_index(drop=True), extra], ignore_index=True))
    data = assemble(feats, df, resolve_splits(df), ["age"])
    assert data.dropped == {"no_embedding": 2, "missing_label": 5, "no_split": 0}
    assert len(data.ids) == len(feats) - 5
    assert data.labels.index.tolist() == data.ids


def test_patch_positions_follow_the_true_geometry(cohort):
    feats, labels = cohort
    pos = feats.patch_positions(0)
    d, h, w = feats.patches[0].shape[:3]
    # Patch centres of a grid tiling the input evenly sit at (n + 0.5) / d.
    np.testing.assert_allclose(pos[:, 0, 0, 0], (np.arange(d) + 0.5) / d, atol=1e-6)
    np.testing.assert_allclose(pos[0, 0, :, 2], (np.arange(w) + 0.5) / w, atol=1e-6)
    no_geo = FeatureSet(feats.ids[:1], feats.cls[:1], feats.patches[:1])
    np.testing.assert_allclose(no_geo.patch_positions(0), pos, atol=1e-6)


def test_feature_set_validation_and_store_loading(tmp_path, cohort):
    feats, _ = cohort
    with pytest.raises(DataError, match="shape"):
        FeatureSet(["a", "b"], np.zeros((3, 4)))
    with pytest.raises(DataError, match="not unique"):
        FeatureSet(["a", "a"], np.zeros((2, 4)))
    from voxelfm.embed import EmbeddingStore

    store = EmbeddingStore(tmp_path / "store")
    for i in range(4):
        store.write(feats.ids[i], VoxelFeatures(
            cls=feats.cls[i], patch=feats.patches[i], registers=np.zeros((0, feats.dim), np.float32),
            patch_geometry=feats.patch_geometry[i], input_geometry=feats.input_geometry[i], model_id="m1"))
    loaded = FeatureSet.from_store(tmp_path / "store")
    assert loaded.ids == feats.ids[:4] and loaded.model_id == "m1"
    np.testing.assert_allclose(loaded.patches[2], feats.patches[2])
    np.testing.assert_allclose(loaded.patch_positions(1), feats.patch_positions(1), atol=1e-6)
    cls_only = FeatureSet.from_store(store, feats.ids[1:3], patches=False)
    assert cls_only.ids == feats.ids[1:3] and cls_only.patches is None
    np.testing.assert_allclose(cls_only.cls, feats.cls[1:3])
    with pytest.raises(StoreError, match="does not exist"):
        FeatureSet.from_store(tmp_path / "nope")
    with pytest.raises(StoreError, match="no features"):
        loaded.position("scan9999")
