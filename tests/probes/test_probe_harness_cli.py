"""Run directories, data fractions, store comparison, suites and the CLI commands."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from voxelfm.core.errors import ConfigError
from voxelfm.core.types import VoxelFeatures
from voxelfm.probes import compare_stores, fraction_sweep, nested_subsets, run_probe
from voxelfm.probes.retrieval import RetrievalIndex

FAST = {"bootstrap": 50, "train": {"threads": 1, "epochs": 5}}


@pytest.fixture(scope="module")
def disk_cohort(tmp_path_factory, cohort_factory):
    """A real EmbeddingStore + labels.csv, plus a second 'random backbone' store of pure noise."""
    from voxelfm.embed import EmbeddingStore

    root = tmp_path_factory.mktemp("cohort")
    feats, labels = cohort_factory(n=200, dim=8, grid=(2, 2, 2), seed=5)
    good, noise = EmbeddingStore(root / "good"), EmbeddingStore(root / "noise")
    rng = np.random.default_rng(0)
    for i, sid in enumerate(feats.ids):
        for store, scale in ((good, None), (noise, 1.0)):
            cls = feats.cls[i] if scale is None else rng.normal(size=feats.dim).astype(np.float32)
            patch = feats.patches[i] if scale is None else rng.normal(size=feats.patches[i].shape).astype(np.float32)
            store.write(sid, VoxelFeatures(cls=cls, patch=patch, registers=np.zeros((0, feats.dim), np.float32),
                                           patch_geometry=feats.patch_geometry[i],
                                           input_geometry=feats.input_geometry[i], model_id="m"))
    labels.to_csv(root / "labels.csv", index=False)
    return root


def test_run_directory_contents(disk_cohort, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "run"
    res = run_probe("classification", disk_cohort / "good", disk_cohort / "labels.csv", target="finding",
                    out_dir=out, config=FAST)
    for name in ("config.yaml", "history.jsonl", "probe.safetensors", "predictions.csv", "metrics.json",
                 "figures/metrics.png", "figures/roc.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["auroc"]) >= {"value", "ci_low", "ci_high", "n"}
    assert metrics["auroc"]["n"] == res.counts["test"]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["task"] == "classification" and cfg["probe"]["train"]["epochs"] == 5
    assert len((out / "history.jsonl").read_text().splitlines()) == 5
    with safe_open(str(out / "probe.safetensors"), framework="pt") as f:
        assert any(k.startswith("finding.") for k in f.keys())  # noqa: SIM118
        assert json.loads(f.metadata()["heads"])["finding"]["kind"] == "mlp"
    pred = pd.read_csv(out / "predictions.csv", dtype={"scan_id": str})
    assert {"scan_id", "split", "finding", "finding_prob"} <= set(pred.columns)


def test_survival_run_writes_kaplan_meier(disk_cohort, tmp_path):
    run_probe("survival", disk_cohort / "good", disk_cohort / "labels.csv", out_dir=tmp_path / "s", config=FAST)
    assert (tmp_path / "s" / "figures" / "kaplan_meier.png").is_file()


def test_nested_subsets_are_nested_and_stratified():
    ids = [f"s{i}" for i in range(100)]
    strata = np.array([0] * 80 + [1] * 20)
    subs = nested_subsets(ids, [0.1, 0.5, 1.0], seed=3, strata=strata)
    assert set(subs[0.1]) <= set(subs[0.5]) <= set(subs[1.0]) == set(ids)
    assert sum(int(s[1:]) >= 80 for s in subs[0.1]) == 2  # 10% of each stratum
    assert subs != nested_subsets(ids, [0.1, 0.5, 1.0], seed=4, strata=strata)
    with pytest.raises(ConfigError):
        nested_subsets(ids, [0.0], seed=0)


def test_fraction_sweep_rows(disk_cohort, tmp_path):
    table = fraction_sweep("classification", disk_cohort / "good", disk_cohort / "labels.csv",
                           fractions=[0.5, 1.0], seeds=[0, 1], target="finding", config=FAST, out_dir=tmp_path)
    auc = table[table["metric"] == "auroc"]
    assert len(auc) == 4 and set(auc["fraction"]) == {0.5, 1.0}
    assert (auc.groupby("fraction")["n_train"].first().diff().dropna() > 0).all()
    assert (tmp_path / "fractions.csv").is_file()


def test_compare_stores_pairs_on_the_same_test_scans(disk_cohort, tmp_path):
    cmp = compare_stores("classification", {"good": disk_cohort / "good", "noise": disk_cohort / "noise"},
                         disk_cohort / "labels.csv", target="finding", config=FAST, out_dir=tmp_path)
    d = cmp.differences.set_index("metric").loc["auroc"]
    assert d["backbone"] == "good" and d["reference"] == "noise"
    assert d["value"] > 0.2 and d["ci_low"] > 0
    assert (tmp_path / "comparison.csv").is_file() and (tmp_path / "good" / "metrics.json").is_file()


def test_retrieval_index_roundtrip_and_cli(disk_cohort, tmp_path):
    from voxelfm.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["retrieve", "build", "--store", str(disk_cohort / "good"), "--out", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    index = RetrievalIndex.load(tmp_path / "idx")
    assert len(index) == 200 and index.feature == "cls"
    sid = index.ids[7]
    res = runner.invoke(app, ["retrieve", "query", "--index", str(tmp_path / "idx"), "--id", sid, "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)[sid]
    assert len(hits) == 3 and sid not in [h["scan_id"] for h in hits]
    cos = [h["cosine"] for h in hits]
    assert cos == sorted(cos, reverse=True)
    # Brute-force check of the top hit.
    v = index.index.reconstruct_n(0, len(index))
    sims = v @ v[7]
    sims[7] = -np.inf
    assert hits[0]["scan_id"] == index.ids[int(np.argmax(sims))]
    res = runner.invoke(app, ["retrieve", "query", "--index", str(tmp_path / "idx"), "--id", "nope"])
    assert res.exit_code == 1 and "not indexed" in res.output


def test_probe_and_evaluate_cli(disk_cohort, tmp_path):
    from voxelfm.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["probe", "regression", "--store", str(disk_cohort / "good"), "--labels",
                              str(disk_cohort / "labels.csv"), "--target", "age", "--out", str(tmp_path / "r"),
                              "--bootstrap", "50", "--epochs", "3", "--set", "train.threads=1", "--no-figures"])
    assert res.exit_code == 0, res.output
    assert "mae" in res.output and (tmp_path / "r" / "metrics.json").is_file()
    res = runner.invoke(app, ["probe", "regression", "--store", str(disk_cohort / "good"), "--labels",
                              str(disk_cohort / "labels.csv"), "--target", "missing_col", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "missing column" in res.output
    suite = {
        "labels": str(disk_cohort / "labels.csv"),
        "stores": {"good": str(disk_cohort / "good"), "noise": str(disk_cohort / "noise")},
        "config": FAST,
        "tasks": [
            {"name": "finding", "task": "classification", "targets": ["finding"], "heads": ["mlp", "qformer"],
             "fractions": [0.5, 1.0], "fraction_seeds": [0]},
            {"name": "age", "task": "regression", "targets": ["age"]},
            {"name": "bad", "task": "regression", "targets": ["no_such_column"]},
        ],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    res = runner.invoke(app, ["evaluate", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "ev"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(tmp_path / "ev" / "summary.csv")
    assert set(summary["backbone"]) == {"good", "noise"}
    assert set(summary["head"]) == {"mlp", "qformer"}
    diffs = pd.read_csv(tmp_path / "ev" / "differences.csv")
    assert set(diffs["reference"]) == {"noise"}
    payload = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert len(payload["errors"]) == 2 and all("no_such_column" in e["error"] for e in payload["errors"])
    for fig in ("tasks.png", "heads_good.png", "fractions_finding_mlp.png"):
        assert (tmp_path / "ev" / "figures" / fig).is_file(), fig
    report = (tmp_path / "ev" / "report.html").read_text()  # the readable report, figures embedded:
    assert "good − noise [95% CI]" in report and "no_such_column" in report  # bars, 2 fraction curves (mlp,
    assert report.count("data:image/png") == 5  # qformer) and the head comparison on each of the 2 stores
    (tmp_path / "broken.yaml").write_text("labels: x\nstores: {}\ntasks: []\n")
    res = runner.invoke(app, ["evaluate", str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "ev2")])
    assert res.exit_code == 1 and "stores" in res.output
