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


def _entropy_values(logits: torch.Tensor) -> dict:
    import math

    p = torch.softmax(logits / 0.04, dim=-1)
    return {"teacher_entropy": float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean()),
            "teacher_entropy_max": math.log(logits.shape[-1])}


def test_head_diagnostics_separate_collapsed_and_diverse_outputs() -> None:
    from voxelfm.ssl.meta_arch import head_diagnostics

    torch.manual_seed(0)
    diverse = head_diagnostics(torch.randn(32, 256))
    same = head_diagnostics(torch.randn(1, 256).expand(32, 256) + 1e-4 * torch.randn(32, 256))
    assert abs(diverse["student_head_cosine"]) < 0.1 and diverse["student_logit_spread_batch"] > 0.9
    assert same["student_head_cosine"] > 0.999 and same["student_logit_spread_batch"] < 1e-3
    assert same["student_logit_spread_prototypes"] > 0.9  # varies across prototypes, not across volumes


def test_diagnose_names_uniform_targets_and_head_collapse_with_a_hint() -> None:
    from voxelfm.ssl.monitor import diagnose

    torch.manual_seed(0)
    flat = _entropy_values(1e-4 * torch.randn(32, 256))  # teacher logits that barely vary: uniform targets
    sharp = _entropy_values(torch.randn(32, 256))
    kw = {"uniform_fraction": 0.98, "head_cosine_max": 0.95}
    found = diagnose({**flat, "student_head_cosine": 0.99, "student_logit_spread_batch": 0.001}, **kw)
    assert set(found) == {"uniform_targets", "head_collapse"}
    assert "prototypes" in found["uniform_targets"] and "lr" in found["head_collapse"]
    assert diagnose({**sharp, "student_head_cosine": 0.5}, **kw) == {}


def test_monitor_warns_once_at_onset_and_records_the_codes(tmp_path, caplog) -> None:
    import logging

    config = load_config(None, ["monitor.collapse_min_steps=1", "monitor.log_period=1"])
    monitor = TrainingMonitor(tmp_path, config, enabled=True, embed_dim=16)
    collapsed = {"total_loss": 1.0, "student_head_cosine": 0.99, "student_logit_spread_batch": 0.001}
    healthy = {"total_loss": 1.0, "student_head_cosine": 0.4, "student_logit_spread_batch": 0.2}
    with caplog.at_level(logging.WARNING, logger="voxelfm.ssl.monitor"):
        for step, values in enumerate([healthy, collapsed, collapsed, healthy, collapsed], start=1):
            monitor.log(step, values)
    messages = [r.getMessage() for r in caplog.records if "head is collapsing" in r.getMessage()]
    assert [m.split(":")[0] for m in messages] == ["step 2", "step 5"]
    assert [r.get("warnings") for r in read_metrics(tmp_path)] == [None, ["head_collapse"], ["head_collapse"], None, ["head_collapse"]]
