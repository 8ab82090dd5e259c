"""Pretraining's compute_precision uses the shared names: aliases resolve, auto is accepted."""

from __future__ import annotations

import logging

import pytest
import torch

from voxelfm.core import device as hw
from voxelfm.core.errors import ConfigError
from voxelfm.ssl.config import load_config
from voxelfm.ssl.trainer import resolve_precision

DATA = ["datasets.0.index_path=x.csv"]


@pytest.mark.parametrize(("given", "resolved"), [("bfloat16", "bf16"), ("float32", "fp32"), ("auto", "auto"),
                                                 ("BF16", "bf16")])
def test_resolved_config_holds_the_canonical_name(given, resolved) -> None:
    assert load_config("cpu_tiny", [*DATA, f"compute_precision={given}"])["compute_precision"] == resolved


def test_unknown_precision_names_the_key_and_choices() -> None:
    with pytest.raises(ConfigError, match=r"^override: compute_precision='fp8': expected one of 'fp32', 'bf16', 'fp16', 'auto'$"):
        load_config("cpu_tiny", [*DATA, "compute_precision=fp8"])


def test_auto_and_bf16_use_bf16_only_where_the_cpu_runs_it(monkeypatch, caplog) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(hw, "cpu_bf16_flags", lambda cpuinfo=None: [])
    assert resolve_precision("auto", cpu) == torch.float32
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("bf16", cpu) == torch.float32
    assert "compute_precision=bf16" in caplog.text and "using fp32" in caplog.text
    monkeypatch.setattr(hw, "cpu_bf16_flags", lambda cpuinfo=None: ["amx_bf16"])
    assert resolve_precision("auto", cpu) == torch.bfloat16
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
