"""The shared comparison, data-fraction and patch-token rules (no training: hand-made task outputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voxelfm.core.errors import DataError
from voxelfm.probes.compare import differences_between, differences_to, paired_differences
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import FeatureSet
from voxelfm.probes.fractions import nested_subsets, stratified_order, subset_size
from voxelfm.probes.run import ProbeResult, needs_patches
from voxelfm.probes.tasks.common import TaskOutput
from voxelfm.viz.result_rows import RowPlan


def _mean(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(x))}


def _result(ids: list[str], values: np.ndarray, *, shift: float = 0.0, pairs: list[str] | None = None) -> ProbeResult:
    """A run whose metric is the mean of ``values`` (+ ``shift``, its own setting) over its test units."""
    def own(x: np.ndarray) -> dict[str, float]:
        return {"mean": float(np.mean(x)) + shift}

    more = [] if pairs is None else [("pair/", _mean, pairs, (np.arange(len(pairs), dtype=float),))]
    out = TaskOutput(pd.DataFrame(), own, ids, (values,), more_evaluations=more)
    return ProbeResult("regression", [], "mlp", {}, pd.DataFrame(), [], {"bootstrap": 50, "bootstrap_seed": 1},
                       {}, {}, out)


def test_paired_differences_align_units_and_keep_each_sides_metric():
    ids = [f"s{i}" for i in range(20)]
    a = _result(ids, np.arange(20, dtype=float), pairs=["p0", "p1", "p2"])
    # b lists the same scans in reverse order plus one a does not have, and shifts its own metric by 1
    b = _result(["extra", *ids[::-1]], np.array([100.0, *np.arange(20, dtype=float)[::-1] - 2]), shift=1.0,
                pairs=["p0", "p1", "p2"])
    diffs = paired_differences(a, b, n_resamples=50, seed=0)
    assert set(diffs) == {"mean", "pair/mean"}
    assert diffs["mean"].value == pytest.approx(2.0 - 1.0) and diffs["mean"].n == 20
    assert diffs["mean"].ci_low == pytest.approx(1.0) and diffs["mean"].ci_high == pytest.approx(1.0)
    assert diffs["pair/mean"].value == pytest.approx(0.0)
    only = paired_differences(a, b, n_resamples=50, seed=0, metrics=["pair/mean"])
    assert set(only) == {"pair/mean"}
    table = differences_to({"a": a, "b": b}, "b")
    assert list(table[["backbone", "reference"]].iloc[0]) == ["a", "b"] and set(table["metric"]) == set(diffs)
    with pytest.raises(DataError, match="share no test units"):
        paired_differences(a, _result(["x", "y"], np.ones(2)), n_resamples=10)


def test_named_pairs_are_compared_once_and_read_into_row_plans():
    """Pairs are named once (in the rows that show them); missing runs and failed pairs drop out."""
    ids = [f"s{i}" for i in range(20)]
    runs = {("job", "a"): _result(ids, np.arange(20, dtype=float) + 2), ("job", "b"): _result(ids, np.arange(20.0)),
            ("job", "alone"): _result(["x", "y"], np.ones(2))}
    pair, missing, failing = (("job", "a"), ("job", "b")), (("job", "a"), ("job", "gone")), (("job", "a"), ("job", "alone"))
    diffs = differences_between(runs, [pair, missing, pair, failing], workers=1)
    assert list(diffs) == [pair, failing] and diffs[pair]["mean"].value == pytest.approx(2.0)
    assert "share no test units" in diffs[failing]
    plan = RowPlan("regression", "x", "mean", "mean", True, {"a": pair[0], "b": pair[1], "gone": ("job", "gone")},
                   {"a − b": pair, "a − gone": missing, "a − alone": failing})
    row = plan.row({k: r.metrics for k, r in runs.items()}, diffs)
    assert list(row.differences) == ["a − b"] and row.differences["a − b"] is diffs[pair]["mean"]
    assert np.isnan(row.values["gone"].value) and list(row.values) == ["a", "b", "gone"]


def test_nested_subsets_round_up_in_total_not_per_stratum():
    ids = [f"s{i}" for i in range(30)]
    strata = np.arange(30) % 15  # fifteen strata of two scans: per-stratum rounding up would keep every stratum
    subs = nested_subsets(ids, [0.2, 0.5, 1.0], seed=0, strata=strata)
    assert [len(subs[f]) for f in (0.2, 0.5, 1.0)] == [6, 15, 30]
    assert set(subs[0.2]) <= set(subs[0.5]) <= set(subs[1.0])
    assert subset_size(0.7, 100) == 70 and subset_size(0.001, 10) == 1 and subset_size(1.0, 7) == 7
    order = stratified_order(ids, seed=3, strata=np.array([0] * 24 + [1] * 6))
    for k in range(1, 31):  # every prefix holds each stratum within one scan of its share
        assert abs(sum(int(s[1:]) >= 24 for s in order[:k]) - k * 6 / 30) <= 1


def test_needs_patches_is_one_rule_for_every_task_and_head():
    assert needs_patches("segmentation") and needs_patches("localisation")
    assert not needs_patches("classification") and needs_patches("classification", {"head": "qformer"})
    # feature applies to kNN and retrieval only: an MLP on CLS never needs patch tokens
    assert not needs_patches("classification", {"feature": "mean_patch"})
    assert needs_patches("retrieval", {"feature": "mean_patch"}) and not needs_patches("knn")
    assert needs_patches("knn", ProbeConfig.for_task("knn", {"feature": "mean_patch"}))


def test_feature_set_reads_as_a_report_feature_map():
    grids = [np.full((1, 2, 2, 3), i, dtype=np.float32) for i in range(2)]
    fs = FeatureSet(["a", "b"], np.eye(2, 3), grids)
    assert "b" in fs and "c" not in fs and list(fs) == ["a", "b"] and fs.index == {"a": 0, "b": 1}
    cls, patch = fs["b"]
    assert cls.shape == (3,) and patch.shape == (1, 2, 2, 3) and patch[0, 0, 0, 0] == 1
    with pytest.raises(DataError, match="patch tokens"):
        FeatureSet(["a"], np.ones((1, 3)))["a"]
