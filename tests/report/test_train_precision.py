"""Report training speaks the shared precision names and device resolver (voxelfm.core.device)."""

from __future__ import annotations

import pytest
import torch

from voxelfm.core import device as hw
from voxelfm.core.errors import ConfigError
from voxelfm.report.train import ReportTrainConfig, autocast_dtype, train_report_model


def test_defaults_use_the_canonical_names() -> None:
    cfg = ReportTrainConfig()
    assert (cfg.lm_dtype, cfg.dtype) == ("fp32", "auto")


def test_torch_spellings_of_older_run_configs_are_read_as_aliases() -> None:
    cfg = ReportTrainConfig.from_dict({"lm_dtype": "bfloat16", "dtype": "float32"})
    assert (cfg.lm_dtype, cfg.dtype) == ("bf16", "fp32")


@pytest.mark.parametrize(("values", "message"), [
    ({"dtype": "fp8"}, "dtype='fp8': expected one of 'auto', 'fp32', 'bf16'"),
    ({"lm_dtype": "auto"}, "lm_dtype='auto': expected one of 'fp32', 'bf16'"),
    ({"dtype": 16}, "dtype=16: expected one of 'auto', 'fp32', 'bf16'"),
])
def test_unknown_precisions_name_the_key_and_the_choices(values, message) -> None:
    with pytest.raises(ConfigError) as info:
        ReportTrainConfig.from_dict(values)
    assert str(info.value) == message


def test_auto_follows_the_shared_hardware_check(monkeypatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(hw, "cpu_bf16_flags", lambda cpuinfo=None: [])
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(hw, "cpu_bf16_flags", lambda cpuinfo=None: ["avx512_bf16"])
    assert autocast_dtype("auto", cpu) == torch.bfloat16 and autocast_dtype("fp32", cpu) is None


def test_cuda_without_cuda_is_refused_before_any_work(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^device=cuda: CUDA was asked for but no CUDA device is available"):
        train_report_model({}, [], lm="tiny", out_dir=tmp_path / "run", device="cuda")
    assert not (tmp_path / "run").exists()
