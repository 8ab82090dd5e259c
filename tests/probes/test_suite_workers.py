"""run_suite's probe jobs on worker processes: the same tables with 1 or 2 workers, a failing job
logged and recorded while the others run, and fail-fast raising it."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from voxelfm.core.errors import ConfigError, VoxelFMError
from voxelfm.core.types import VoxelFeatures
from voxelfm.probes.suite import Suite, run_suite

FAST = {"bootstrap": 20, "train": {"epochs": 2}}


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory, cohort_factory) -> Suite:  # type: ignore[no-untyped-def]
    """Two small stores (planted signal, noise) and a suite with a sweep and a task that must fail."""
    from voxelfm.embed import EmbeddingStore

    root = tmp_path_factory.mktemp("suite")
    feats, labels = cohort_factory(n=60, dim=8, grid=(2, 2, 2), seed=3)
    rng = np.random.default_rng(1)
    for name in ("good", "noise"):
        store = EmbeddingStore(root / name)
        for i, sid in enumerate(feats.ids):
            cls = feats.cls[i] if name == "good" else rng.normal(size=feats.dim).astype(np.float32)
            store.write(sid, VoxelFeatures(cls=cls, patch=feats.patches[i], registers=np.zeros((0, feats.dim), np.float32),
                                           patch_geometry=feats.patch_geometry[i],
                                           input_geometry=feats.input_geometry[i], model_id="m"))
    labels.to_csv(root / "labels.csv", index=False)
    return Suite.from_dict({
        "labels": "labels.csv", "stores": {"good": "good", "noise": "noise"}, "config": FAST,
        "tasks": [
            {"name": "finding", "task": "classification", "targets": ["finding"], "fractions": [0.5],
             "fraction_seeds": [0]},
            {"name": "bad", "task": "regression", "targets": ["no_such_column"]},
            {"name": "age", "task": "regression", "targets": ["age"]},
        ],
    }, base=root)


def _tables(out: Path) -> dict[str, pd.DataFrame | list]:
    return {"summary": pd.read_csv(out / "summary.csv"), "differences": pd.read_csv(out / "differences.csv"),
            "fractions": pd.read_csv(out / "fractions_finding_mlp.csv"),
            "errors": json.loads((out / "summary.json").read_text())["errors"]}


def test_one_or_two_workers_give_the_same_tables(tiny_suite: Suite, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="voxelfm.probes.suite"):
        run_suite(tiny_suite, tmp_path / "one", workers=1)
        run_suite(tiny_suite, tmp_path / "two", workers=2)
    one, two = _tables(tmp_path / "one"), _tables(tmp_path / "two")
    for name in ("summary", "differences", "fractions"):
        pd.testing.assert_frame_equal(one[name], two[name], check_exact=True)
    assert one["errors"] == two["errors"] and [e["name"] for e in one["errors"]] == ["bad", "bad"]
    # the failing task is logged as it ends and the tasks after it still ran
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 4 and all("bad/mlp/" in m and "no_such_column" in m for m in failed)  # 2 stores x 2 runs
    assert set(one["summary"]["name"]) == {"finding", "age"}
    assert set(one["summary"]["backbone"]) == {"good", "noise"} and set(one["differences"]["reference"]) == {"noise"}
    assert "[8/8] " in caplog.text  # progress: 2 stores x (finding, its sweep, bad, age)


def test_fail_fast_raises_the_failing_job(tiny_suite: Suite, tmp_path: Path) -> None:
    bad = dataclasses.replace(tiny_suite, tasks=[t for t in tiny_suite.tasks if t.name == "bad"])
    with pytest.raises(VoxelFMError, match="no_such_column"):
        run_suite(bad, tmp_path / "ff", keep_going=False, workers=1)
    assert not (tmp_path / "ff" / "summary.json").exists()
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        run_suite(tiny_suite, tmp_path / "w0", workers=0)
