import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import synthetic_cohort
from voxelfm.cli.main import app
from voxelfm.core.types import VoxelFeatures
from voxelfm.report.dataset import write_records

runner = CliRunner()


@pytest.fixture(scope="module")
def store_and_reports(tmp_path_factory):
    from voxelfm.embed.store import EmbeddingStore

    root = tmp_path_factory.mktemp("cli")
    features, records = synthetic_cohort(n=12)
    store = EmbeddingStore(root / "store")
    for sid, (cls, patch) in features.items():
        store.write(sid, VoxelFeatures(cls=cls, patch=patch, registers=np.zeros((1, cls.shape[0]),
                                                                               np.float32),
                                       model_id="synthetic"))
    write_records(root / "reports.jsonl", (r.to_dict() for r in records))
    return root


def test_train_generate_evaluate_cli(store_and_reports, tiny_lm_dir):
    root = store_and_reports
    cfg = root / "cfg.json"
    cfg.write_text(json.dumps({"projector_hidden": 24, "projector_heads": 2, "log_every": 1}))
    result = runner.invoke(app, [
        "report", "train", "--store", str(root / "store"), "--reports", str(root / "reports.jsonl"),
        "--out", str(root / "run"), "--lm", str(tiny_lm_dir), "--config", str(cfg),
        "--queries", "2", "--stage1-epochs", "1", "--stage2-epochs", "1", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads((root / "run" / "config.json").read_text())["train"]["num_queries"] == 2
    result = runner.invoke(app, ["report", "generate", str(root / "run"), "--store",
                                 str(root / "store"), "--max-new-tokens", "4",
                                 "--ids", "scan000,scan001", "--ids", "scan011"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (root / "run" / "generated.jsonl").read_text().splitlines()]
    assert [r["scan_id"] for r in rows] == ["scan000", "scan001", "scan011"]
    result = runner.invoke(app, ["report", "evaluate", str(root / "run"), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    assert "macro F1" in result.output
    assert json.loads((root / "run" / "metrics.json").read_text())["findings"]["n_reports"] == 3


def _flat(output: str) -> str:
    return " ".join(output.split())  # rich wraps long messages at the terminal width


def test_cli_errors_are_one_line(store_and_reports, tmp_path):
    result = runner.invoke(app, ["report", "evaluate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no generated reports" in _flat(result.output) and "Traceback" not in result.output
    result = runner.invoke(app, ["report", "train", "--store", str(store_and_reports / "store"),
                                 "--reports", str(tmp_path / "missing.jsonl"),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "reports file not found" in _flat(result.output)
    result = runner.invoke(app, ["report", "get-lm", "gpt-17", "--cache", str(tmp_path)])
    assert result.exit_code == 1 and "unknown LM name" in _flat(result.output)
