"""Each probe learns a planted signal and stays at chance on noise."""

import numpy as np
import pytest

from voxelfm.core.errors import DataError
from voxelfm.probes import run_probe
from voxelfm.probes.retrieval import read_neighbours

FAST = {"bootstrap": 100, "train": {"threads": 1}}


@pytest.fixture(scope="module")
def small(cohort_factory):
    return cohort_factory(n=240, dim=16, grid=(3, 3, 3), seed=1)


def _cfg(**extra):
    out = {**FAST, **extra}
    out["train"] = {**FAST["train"], **extra.get("train", {})}
    return out


def test_mlp_learns_planted_finding_and_stays_at_chance_on_noise(small):
    feats, labels = small
    good = run_probe("classification", feats, labels, target="finding", head="mlp", config=_cfg())
    bad = run_probe("classification", feats, labels, target="noise", head="mlp", config=_cfg())
    assert good.metrics["auroc"].value > 0.9
    assert good.metrics["auroc"].ci_low > 0.75
    assert 0.3 < bad.metrics["auroc"].value < 0.7
    assert bad.metrics["auroc"].ci_low < 0.5 < bad.metrics["auroc"].ci_high
    assert set(good.predictions["split"]) == {"val", "test"}


def test_qformer_finds_a_signal_that_lives_in_one_patch_token(small):
    feats, labels = small
    res = run_probe("classification", feats, labels, target="finding", head="qformer",
                    config=_cfg(head_params={"hidden_dim": 32}, train={"epochs": 15}))
    assert res.metrics["auroc"].value > 0.85


def test_probe_run_does_not_depend_on_the_global_torch_generator(small):
    """The same config gives the same probe whatever happened to torch's global RNG before (as in
    a fresh process): head initialisation is seeded from train.seed."""
    import torch

    feats, labels = small
    runs = []
    for outside_seed in (0, 12345):
        torch.manual_seed(outside_seed)
        runs.append(run_probe("classification", feats, labels, target="finding", head="qformer",
                              config=_cfg(head_params={"hidden_dim": 16}, train={"epochs": 2})))
    assert runs[0].predictions["finding_prob"].tolist() == runs[1].predictions["finding_prob"].tolist()
    assert torch.initial_seed() == 12345  # the caller's generator was not reseeded


def test_multilabel_per_label_and_shared_and_multiclass(small):
    feats, labels = small
    per = run_probe("classification", feats, labels, target=["finding", "noise"], config=_cfg())
    shared = run_probe("classification", feats, labels, target=["finding", "noise"],
                       config=_cfg(multilabel="shared", train={"epochs": 20}))
    for res in (per, shared):
        assert res.metrics["finding/auroc"].value > 0.85
        assert res.metrics["noise/auroc"].value < 0.75
        assert res.metrics["macro/auroc"].value == pytest.approx(
            (res.metrics["finding/auroc"].value + res.metrics["noise/auroc"].value) / 2)
    multi = run_probe("classification", feats, labels, target="grade", config=_cfg(train={"epochs": 20}))
    assert multi.metrics["auroc"].value > 0.8
    assert {"prob_mild", "prob_moderate", "prob_severe", "grade_pred"} <= set(multi.predictions.columns)


def test_knn_chooses_k_on_validation(small):
    feats, labels = small
    res = run_probe("knn", feats, labels, target="finding", config=_cfg(knn_k=[1, 5, 15]))
    assert res.metrics["auroc"].value > 0.85
    assert res.output.extras["k"]["finding"] in (1, 5, 15)
    noise = run_probe("knn", feats, labels, target="noise", config=_cfg(knn_k=[5, 15]))
    # kNN scores are coarse (few neighbours) and the test split small: a wide band around chance.
    assert 0.2 < noise.metrics["auroc"].value < 0.8
    assert noise.metrics["auroc"].value < res.metrics["auroc"].value - 0.1


def test_regression_uses_training_statistics_and_learns(small):
    feats, labels = small
    res = run_probe("regression", feats, labels, target="age", config=_cfg())
    train_age = labels.loc[labels["split"] == "train", "age"]
    stats = res.output.extras["standardisation"]["age"]
    assert stats["train_mean"] == pytest.approx(train_age.mean())
    assert stats["train_sd"] == pytest.approx(train_age.std(ddof=0))
    assert res.metrics["r2"].value > 0.6
    assert res.metrics["mae_sd"].value == pytest.approx(res.metrics["mae"].value / stats["train_sd"])
    noise = labels.assign(rand=np.random.default_rng(0).normal(size=len(labels)))
    res_noise = run_probe("regression", feats, noise, target="rand", config=_cfg())
    assert res_noise.metrics["r2"].value < 0.1


def test_survival_probe_ranks_risk(small):
    feats, labels = small
    res = run_probe("survival", feats, labels, config=_cfg(ties="breslow", horizons=[0.5]))
    assert res.metrics["c_index_harrell"].value > 0.6
    assert {"c_index_uno", "auroc_event_within@0.5"} <= set(res.metrics)
    assert set(res.predictions["risk_group"]) == {"low", "high"}
    shuffled = labels.copy()
    perm = np.random.default_rng(3).permutation(len(labels))
    shuffled[["time", "event"]] = labels[["time", "event"]].to_numpy()[perm]
    res_noise = run_probe("survival", feats, shuffled, config=_cfg())
    assert 0.35 < res_noise.metrics["c_index_harrell"].value < 0.65


def test_retrieval_label_match_and_same_patient(small):
    feats, labels = small
    res = run_probe("retrieval", feats, labels, target=["finding", "noise"], config=_cfg(n_negatives=20))
    assert res.metrics["finding/recall@1"].value > 2 / 21  # random baseline 1/21
    assert res.metrics["finding/recall@1"].value > res.metrics["noise/recall@1"].value
    assert res.metrics["noise/recall@10"].value < 0.7  # random baseline 10/21
    assert "same_patient/map" in res.metrics
    neighbours = read_neighbours(res.predictions)
    assert list(neighbours) == [str(i) for i in res.predictions["scan_id"]]
    first = neighbours[str(res.predictions["scan_id"].iloc[0])]
    assert first and all(isinstance(sid, str) and -1.0 <= sim <= 1.0 for sid, sim in first)
    assert [sim for _, sim in first] == sorted((sim for _, sim in first), reverse=True)  # nearest first


def test_read_neighbours_inverts_the_joined_columns() -> None:
    import pandas as pd

    preds = pd.DataFrame({"scan_id": ["a", "b", "c"], "neighbours": ["b;c", "", float("nan")],
                          "similarities": ["0.9000;0.1000", "", float("nan")]})
    assert read_neighbours(preds) == {"a": [("b", 0.9), ("c", 0.1)], "b": [], "c": []}


def test_localisation_learns_marker_position_in_world_mm(small):
    feats, labels = small
    res = run_probe("localisation", feats, labels, config=_cfg(train={"epochs": 15}))
    # Patches are 6 mm apart in-plane (4 voxels x 1.5 mm) and 8 mm in z.
    assert res.metrics["mean_error_mm"].value < 4.0
    assert res.metrics["hit_rate@10mm"].value > 0.9
    row = res.predictions.iloc[0]
    assert {"pred_x_mm", "pred_z_norm", "error_mm"} <= set(res.predictions.columns)
    assert np.isfinite(row["pred_x_mm"])


def test_clear_errors_for_bad_labels(small):
    feats, labels = small
    with pytest.raises(DataError, match="missing column"):
        run_probe("classification", feats, labels, target="nope", config=_cfg())
    const = labels.assign(finding=0)
    with pytest.raises(DataError, match="constant"):
        run_probe("classification", feats, const, target="finding", config=_cfg())
    few = labels.assign(event=0)
    with pytest.raises(DataError, match="too few events"):
        run_probe("survival", feats, few, config=_cfg())
    with pytest.raises(DataError, match="patches"):
        run_probe("classification", type(feats)(feats.ids, feats.cls), labels, target="finding", head="qformer",
                  config=_cfg())
