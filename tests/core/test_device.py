"""One precision vocabulary and one device resolver (voxelfm.core.device), used by every command."""

from __future__ import annotations

import pytest
import torch

from voxelfm.core import device as hw
from voxelfm.core.errors import ConfigError


@pytest.mark.parametrize(("given", "canonical"), [
    ("fp32", "fp32"), ("FP32", "fp32"), ("float32", "fp32"), (torch.float32, "fp32"),
    ("bf16", "bf16"), ("bfloat16", "bf16"), (torch.bfloat16, "bf16"),
    ("fp16", "fp16"), ("float16", "fp16"), ("half", "fp16"), ("auto", "auto"),
])
def test_every_spelling_has_one_canonical_name(given, canonical) -> None:
    assert hw.canonical_precision(given) == canonical


def test_an_unknown_precision_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        hw.canonical_precision("fp8", key="compute_precision", source="run.yaml")
    assert str(info.value) == "run.yaml: compute_precision='fp8': expected one of 'fp32', 'bf16', 'fp16', 'auto'"
    with pytest.raises(ConfigError, match=r"^dtype='auto': expected one of 'fp32', 'bf16', 'fp16'$"):
        hw.torch_dtype("auto", key="dtype")


def test_torch_dtypes_and_names_round_trip() -> None:
    for name in ("fp32", "bf16", "fp16"):
        assert hw.precision_name(hw.torch_dtype(name)) == name
    assert hw.precision_name(None) == "fp32"


def test_auto_autocasts_to_bf16_only_where_the_cpu_runs_it_natively(monkeypatch) -> None:
    monkeypatch.setattr(hw, "cpu_bf16_flags", lambda cpuinfo=None: [])
    assert hw.fast_bf16("cpu")[0] is False
    assert hw.autocast_dtype("auto", "cpu") is None
    assert hw.autocast_dtype("bfloat16", "cpu") == torch.bfloat16  # an explicit choice is kept
    assert hw.autocast_dtype("fp32", "cpu") is None
    monkeypatch.setattr(hw, "cpu_bf16_flags", lambda cpuinfo=None: ["amx_bf16"])
    assert hw.fast_bf16("cpu") == (True, "CPU has amx_bf16")
    assert hw.autocast_dtype("auto", "cpu") == torch.bfloat16


def test_cpu_flags_come_from_cpuinfo() -> None:
    assert hw.cpu_bf16_flags("flags : fpu avx512_bf16 amx_bf16\n") == ["amx_bf16", "avx512_bf16"]
    assert hw.cpu_bf16_flags("flags : fpu avx2\n") == []


def test_devices_resolve_to_torch_devices(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hw.resolve_device("cpu") == torch.device("cpu")
    assert hw.resolve_device("auto") == torch.device("cpu")
    assert hw.resolve_device(None) == torch.device("cpu")
    assert hw.resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_asked_for_without_cuda_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1", "CUDA"):
        with pytest.raises(ConfigError, match=rf"^train.device={name}: CUDA was asked for but no CUDA device"):
            hw.resolve_device(name, key="train.device")
    with pytest.raises(ConfigError, match=r"^--device='gpu': unknown device; expected cpu, cuda, cuda:N or auto$"):
        hw.resolve_device("gpu")


def test_cuda_index_comes_from_local_rank_and_is_checked(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert hw.resolve_device("auto") == torch.device("cuda", 1)
    assert hw.resolve_device("cuda") == torch.device("cuda", 1)
    assert hw.resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"cuda:2 asked for, but there are 2 CUDA device\(s\)"):
        hw.resolve_device("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "3")  # more ranks than GPUs: auto shares them round-robin
    assert hw.resolve_device("auto") == torch.device("cuda", 1)
