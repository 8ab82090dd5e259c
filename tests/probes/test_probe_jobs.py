"""Probe jobs (voxelfm.probes.jobs) and the one store-feature cache (probes.data.cached_features)
shared by ``voxelfm evaluate`` and the demo; the usable-target checks and example pickers the demo
reads from the library."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from voxelfm.core.errors import DataError, StoreError
from voxelfm.core.types import VoxelFeatures
from voxelfm.probes.data import (
    FeatureSet,
    cached_features,
    forget_features,
    usable_binary,
    usable_continuous,
)
from voxelfm.probes.jobs import ProbeJob, run_jobs
from voxelfm.probes.retrieval import neighbour_examples
from voxelfm.probes.tasks.segmentation import mask_examples


def _write_store(path: Path, feats: FeatureSet, rows: range) -> None:
    from voxelfm.embed import EmbeddingStore

    store = EmbeddingStore(path)
    for i in rows:
        store.write(feats.ids[i], VoxelFeatures(cls=feats.cls[i], patch=feats.patches[i],
                                                registers=np.zeros((0, feats.dim), np.float32),
                                                patch_geometry=feats.patch_geometry[i],
                                                input_geometry=feats.input_geometry[i], model_id="m"))


@pytest.fixture()
def small(tmp_path: Path, cohort_factory) -> tuple[Path, Path, FeatureSet]:  # type: ignore[no-untyped-def]
    feats, labels = cohort_factory(n=40, dim=8, grid=(2, 2, 2), seed=5)
    _write_store(tmp_path / "store", feats, range(30))
    labels.to_csv(tmp_path / "labels.csv", index=False)
    yield tmp_path / "store", tmp_path / "labels.csv", feats
    forget_features()


def test_a_store_is_read_once_until_it_changes(small: tuple[Path, Path, FeatureSet]) -> None:
    store, _labels, feats = small
    with_patches = cached_features(store, name="s")
    assert cached_features(store, name="s") is with_patches
    assert cached_features(store, patches=False, name="s") is with_patches  # patches serve CLS-only requests
    assert len(with_patches) == 30 and with_patches.has_patches
    _write_store(store, feats, range(30, 32))  # the store changed: read again
    again = cached_features(store, name="s")
    assert again is not with_patches and len(again) == 32
    forget_features(keep=[store])
    assert cached_features(store, name="s") is again
    forget_features()
    assert cached_features(store, name="s") is not again
    with pytest.raises(StoreError, match="does not exist"):
        cached_features(store.parent / "nowhere")


def test_jobs_return_outcomes_in_job_order_and_failures_as_outcomes(small: tuple[Path, Path, FeatureSet]) -> None:
    store, labels, _feats = small
    fast = {"bootstrap": 10, "train": {"epochs": 1}}
    jobs = [ProbeJob("regression", str(store), str(labels), "age", targets=("age",), config=fast, cost=1.0),
            ProbeJob("regression", str(store), str(labels), "bad", targets=("no_such_column",), config=fast, cost=9.0),
            ProbeJob("classification", str(store), str(labels), "sweep", targets=("finding",), config=fast,
                     fractions=(0.5, 1.0), fraction_seeds=(0,), cost=5.0)]
    finished: list[int] = []
    outcomes = run_jobs(jobs, done=lambda i, _outcome: finished.append(i))
    assert finished == [1, 2, 0]  # the costliest first
    assert outcomes[0][0] == "ok" and "r2" in outcomes[0][1].metrics
    assert outcomes[1][0] == "failed" and "no_such_column" in outcomes[1][1]
    assert outcomes[2][0] == "ok" and sorted(set(outcomes[2][1]["fraction"])) == [0.5, 1.0]
    with pytest.raises(DataError, match="no_such_column"):
        run_jobs([ProbeJob("regression", str(store), str(labels), "bad", targets=("no_such_column",), config=fast,
                           keep_going=False)])


def test_usable_targets() -> None:
    labels = pd.DataFrame({"split": ["train", "train", "val", "val", "test", "test"],
                           "both": [0, 1, 0, 1, 1, 0], "one_class_in_val": [0, 1, 1, 1, 0, 1],
                           "age": [50.0, 60.0, 1.0, 2.0, 3.0, 4.0], "flat": [1.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                           "gap": [1.0, 2.0, None, 3.0, 4.0, 5.0]})
    assert usable_binary(labels, ["both", "one_class_in_val", "absent"]) == ["both"]
    assert usable_binary(labels, ["both"], min_per_class=2) == []
    assert usable_continuous(labels, ["age", "flat", "gap", "absent"]) == ["age"]


def test_neighbour_examples_mark_shared_findings_and_patients() -> None:
    labels = pd.DataFrame({"scan_id": ["a", "b", "c", "d"], "patient_id": ["p1", "p1", "p2", "p3"],
                           "x": [1, 1, 0, 1], "y": [0, 0, 1, 0], "split": "test"})
    predictions = pd.DataFrame({"scan_id": ["c", "a", "d"], "neighbours": ["a;b", "c;b;d", ""],
                                "similarities": ["0.9;0.5", "0.8;0.7;0.1", ""]})
    examples = neighbour_examples(predictions, labels, ["x", "y"], n=5, k=2)
    assert [e["query"] for e in examples] == ["c", "a"]  # d has no neighbours
    assert examples[1]["neighbours"] == [
        {"scan_id": "c", "similarity": 0.8, "match": False, "same_patient": False},
        {"scan_id": "b", "similarity": 0.7, "match": True, "same_patient": True}]
    assert len(neighbour_examples(predictions, labels, ["x", "y"], n=1)) == 1


def test_mask_examples_list_masks_on_disk_with_their_dice(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    for sid in ("s1", "s3"):
        (tmp_path / "masks" / f"{sid}_pred.nii.gz").write_bytes(b"x")
    dice = np.array([[0.5, 0.7], [0.1, 0.2], [np.nan, np.nan]])
    result = SimpleNamespace(out_dir=tmp_path, output=SimpleNamespace(eval_ids=["s1", "s2", "s3"],
                                                                      eval_arrays=(dice, None)))
    examples = mask_examples(result, n=5)
    assert [(e["scan_id"], e["dice"]) for e in examples] == [("s1", pytest.approx(0.6)), ("s3", None)]
    assert examples[0]["prediction"] == tmp_path / "masks" / "s1_pred.nii.gz"
    assert len(mask_examples(result, n=1)) == 1
