"""Effective-rank collapse monitor and the JSONL log."""

from __future__ import annotations

import torch

from voxelfm.ssl.config import load_config
from voxelfm.ssl.monitor import TrainingMonitor, effective_rank, read_metrics


def test_effective_rank_of_collapsed_and_spread_embeddings() -> None:
    torch.manual_seed(0)
    assert effective_rank(torch.ones(32, 16)) == 1.0
    rank_one = torch.randn(32, 1) * torch.randn(1, 16)
    assert effective_rank(rank_one) < 1.5
    assert effective_rank(torch.randn(512, 16)) > 14


def test_monitor_warns_on_collapse_and_writes_jsonl(tmp_path) -> None:
    config = load_config(None, ["monitor.collapse_min_steps=2", "monitor.rank_window=64", "monitor.log_period=1"])
    monitor = TrainingMonitor(tmp_path, config, enabled=True, embed_dim=16)
    torch.manual_seed(0)
    for step in (1, 2):
        monitor.observe_teacher_cls(torch.randn(32, 16))
        assert not monitor.log(step, {"total_loss": 1.0}).get("collapse_warning")
    for _ in range(3):
        monitor.observe_teacher_cls(torch.randn(32, 1) * torch.ones(1, 16))  # every volume on one line
    record = monitor.log(5, {"total_loss": 1.0})
    assert record["collapse_warning"] and monitor.collapse_warnings == 1
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 5]
