"""Messages for labels that do not fit the store and for non-finite targets (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.core.errors import DataError, StoreError
from voxelfm.core.types import VoxelFeatures
from voxelfm.probes import run_probe
from voxelfm.probes.data import FeatureSet

FAST = {"bootstrap": 20, "train": {"threads": 1, "epochs": 1}}


@pytest.fixture(scope="module")
def small(cohort_factory):
    return cohort_factory(n=120, dim=8, grid=(2, 2, 2), seed=3)


def test_labels_matching_no_store_id_say_so_with_examples(tmp_path) -> None:
    from voxelfm.embed import EmbeddingStore

    store = EmbeddingStore(tmp_path / "store")
    for i in range(3):
        store.write(f"scan{i}", VoxelFeatures(cls=np.ones(4, np.float32), patch=np.ones((1, 1, 1, 4), np.float32),
                                              registers=np.zeros((0, 4), np.float32), model_id="m"))
    with pytest.raises(StoreError, match=r"none of the 2 label ids match the 3 store ids \(labels e\.g\. "
                                         r"\['CT-1', 'CT-2'\], store e\.g\. \['scan0', 'scan1', 'scan2'\]\)"):
        FeatureSet.from_store(tmp_path / "store", ["CT-1", "CT-2", "CT-1"])
    store.record_failure("scan9", None, "unreadable")
    empty = EmbeddingStore(tmp_path / "empty")
    empty.record_failure("x", None, "unreadable")
    with pytest.raises(StoreError, match=r"holds no usable embeddings \(1 scan\(s\) failed to embed\)"):
        FeatureSet.from_store(tmp_path / "empty")


@pytest.mark.parametrize("task,column", [("regression", "age"), ("survival", "time")])
def test_an_infinite_target_is_named_as_non_finite_not_constant(small, task: str, column: str) -> None:
    feats, labels = small
    bad = labels.copy()
    row = bad[bad.split == "train"].index[0]
    bad.loc[row, column] = np.inf
    scan = bad.loc[row, "scan_id"]
    kwargs = {"target": column} if task == "regression" else {}
    with pytest.raises(DataError, match=rf"column '{column}' has 1 non-finite value\(s\), at scan id\(s\) {scan} \(inf\)"):
        run_probe(task, feats, bad, config=FAST, **kwargs)


@pytest.mark.parametrize(("sets", "message"), [
    (["train.lr=-1e-3"], "train.lr=-0.001: expected a number > 0"),
    (["train.epochs=many"], "train.epochs='many': expected an integer >= 1"),
    (["train.noise_p=2"], "train.noise_p=2: expected a number >= 0 and <= 1"),
    (["bootstrap=0"], "bootstrap=0: expected an integer >= 1"),
    (["balanced=maybe"], "balanced='maybe': expected true or false"),
    (["knn_k=5"], "knn_k=5: expected a list of integers >= 1"),
    (["train.lr_typo=1"], "unknown training option 'train.lr_typo'"),
    (["lr=1"], "unknown probe option 'lr'"),
    (["train=5", "train.lr=1"], "train is not a section"),
    (["novalue"], "--set expects key=value"),
])
def test_cli_probe_set_values_of_the_wrong_type_or_range_are_one_line_errors(tmp_path, sets, message) -> None:
    from typer.testing import CliRunner

    from voxelfm.cli.main import app
    from voxelfm.embed import EmbeddingStore

    store = EmbeddingStore(tmp_path / "store")
    for i in range(3):
        store.write(f"s{i}", VoxelFeatures(cls=np.full(4, i, np.float32), patch=np.ones((1, 1, 1, 4), np.float32),
                                           registers=np.zeros((0, 4), np.float32), model_id="m"))
    (tmp_path / "labels.csv").write_text("scan_id,age,split\ns0,1,train\ns1,2,val\ns2,3,test\n")
    args = ["probe", "regression", "--store", str(tmp_path / "store"), "--labels", str(tmp_path / "labels.csv"),
            "--target", "age", "--out", str(tmp_path / "run"), "--no-figures"]
    for item in sets:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert message in text and text.startswith("error:") and "Traceback" not in text, result.output
