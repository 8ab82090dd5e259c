"""End to end on a tiny LM: train (stage 1 + LoRA / full), generate (3 strategies), evaluate."""

import json

import pytest

from conftest import synthetic_cohort
from voxelfm.core.errors import CheckpointError, DataError
from voxelfm.report.dataset import load_reports, write_records
from voxelfm.report.evaluate import evaluate_run
from voxelfm.report.generate import generate_reports, load_report_model, write_generated
from voxelfm.report.model import DecodingConfig
from voxelfm.report.train import ReportTrainConfig, train_report_model

FAST = dict(num_queries=4, projector_hidden=24, projector_heads=2, stage1_epochs=1.0,
            stage2_epochs=1.0, batch_size=4, log_every=1, max_val_examples=4)


@pytest.fixture(scope="module")
def lora_run(tiny_lm_dir, tmp_path_factory):
    features, records = synthetic_cohort()
    run = train_report_model(features, records, lm=tiny_lm_dir,
                             out_dir=tmp_path_factory.mktemp("run"),
                             config=ReportTrainConfig(**FAST))
    return run, features, records


def test_training_writes_a_complete_run(lora_run):
    run, _, records = lora_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["lora"] and not cfg["lm_fallback"] and cfg["feature_dim"] == 16
    assert (run / "lora" / "adapter_model.safetensors").is_file()
    assert (run / "projector.safetensors").is_file() and (run / "stage1" / "projector.json").is_file()
    summary = json.loads((run / "training.json").read_text())
    s1, s2 = summary["stages"]
    assert s1["steps"] == 4 and s2["steps"] == 4  # 16 training scans / batch 4, 1 epoch each
    assert s2["trainable_parameters"] > s1["trainable_parameters"]  # LoRA adds parameters
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log].count("stage1") == 4
    assert len(load_reports(run / "references.jsonl")) == len(records)


@pytest.mark.parametrize("strategy", ["greedy", "nucleus", "beam"])
def test_generate_strategies(lora_run, strategy):
    run, features, _ = lora_run
    model, _ = load_report_model(run)
    rows = generate_reports(run, features, ["scan020", "scan021"], model=model,
                            decoding=DecodingConfig(strategy=strategy, max_new_tokens=6,
                                                    num_beams=2))
    assert [r["scan_id"] for r in rows] == ["scan020", "scan021"]
    assert all(isinstance(r["generated"], str) and r["seconds"] >= 0 for r in rows)


def test_batched_greedy_matches_single(lora_run):
    run, features, _ = lora_run
    model, _ = load_report_model(run)
    dec = DecodingConfig(max_new_tokens=5)
    ids = ["scan016", "scan017", "scan018"]
    single = generate_reports(run, features, ids, model=model, decoding=dec, batch_size=1)
    batched = generate_reports(run, features, ids, model=model, decoding=dec, batch_size=3)
    assert [r["generated"] for r in single] == [r["generated"] for r in batched]


def test_generate_and_evaluate_default_test_split(lora_run):
    run, features, records = lora_run
    rows = generate_reports(run, features, decoding=DecodingConfig(max_new_tokens=8))
    assert {r["scan_id"] for r in rows} == {r.scan_id for r in records if r.split == "test"}
    jsonl, csv_path = write_generated(run, rows)
    assert csv_path.read_text().startswith("scan_id,reference,generated,seconds")
    metrics = evaluate_run(run, n_bootstrap=50)
    assert set(metrics) >= {"findings", "baseline_majority", "text", "seconds_per_report"}
    assert len(metrics["findings"]["per_finding"]) == 18
    assert (run / "metrics.json").is_file() and (run / "findings_f1.png").stat().st_size > 0


def test_generate_rejects_unknown_scan(lora_run):
    run, features, _ = lora_run
    model, _ = load_report_model(run)
    with pytest.raises(DataError, match="nope"):
        generate_reports(run, features, ["nope"], model=model)


def test_tiny_fallback_learns_the_cohort(tmp_path, monkeypatch):
    """The offline fallback (tiny LM from scratch, fully trained) beats the majority baseline."""
    features, records = synthetic_cohort(n=48, seed=1)
    cfg = ReportTrainConfig(**{**FAST, "stage1_epochs": 1.0, "stage2_epochs": 25.0,
                               "stage2_lr": 2e-3, "batch_size": 8, "log_every": 50})
    monkeypatch.setenv("VOXELFM_CACHE", str(tmp_path / "empty-cache"))  # SmolLM2 "not cached"
    with pytest.warns(UserWarning, match="get-lm"):
        run = train_report_model(features, records, lm=None, out_dir=tmp_path / "run", config=cfg)
    cfg_json = json.loads((run / "config.json").read_text())
    assert cfg_json["lm_fallback"] and cfg_json["lm"] == "lm" and cfg_json["train"]["stage2_mode"] == "full"
    write_generated(run, generate_reports(run, features, [r.scan_id for r in records
                                                          if r.split != "train"]))
    metrics = evaluate_run(run, n_bootstrap=100)
    assert metrics["findings"]["macro"]["f1"] > metrics["baseline_majority"]["macro"]["f1"] + 0.2


def test_training_without_train_split_fails(tmp_path, tiny_lm_dir):
    features, records = synthetic_cohort(n=6)
    only_test = [r for r in records if r.split != "train"]
    with pytest.raises(DataError, match="no training reports"):
        train_report_model(features, only_test, lm=tiny_lm_dir, out_dir=tmp_path)


def test_load_report_model_requires_finished_run(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_report_model(tmp_path)


def test_load_reports_validation(tmp_path):
    path = tmp_path / "reports.jsonl"
    write_records(path, [{"scan_id": "a", "split": "train", "report": "x"},
                         {"scan_id": "a", "split": "test", "report": "y"}])
    with pytest.raises(DataError, match="duplicate"):
        load_reports(path)
    path.write_text('{"scan_id": "a", "split": "holdout", "report": "x"}\n')
    with pytest.raises(DataError, match="split"):
        load_reports(path)


def test_decoding_suppresses_end_of_sequence_before_min_new_tokens():
    assert DecodingConfig().generate_kwargs()["min_new_tokens"] == 1
    assert DecodingConfig(min_new_tokens=0).generate_kwargs()["min_new_tokens"] == 0
    with pytest.raises(Exception, match="min_new_tokens"):
        DecodingConfig(max_new_tokens=4, min_new_tokens=5)
