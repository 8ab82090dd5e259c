"""``--dtype auto``: bf16 only where the hardware has it and it matches fp32 on the first scan."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SPEC, phantom
from voxelfm.core import device as hardware
from voxelfm.embed.precision import choose_dtype, cpu_bf16_flags
from voxelfm.preprocess import preprocess

AMX_CPU = "processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2_CPU = "processor : 0\nflags : fpu sse avx avx2\n"


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    assert cpu_bf16_flags(AMX_CPU) == ["amx_bf16", "avx512_bf16"]
    assert cpu_bf16_flags(AVX2_CPU) == [] and cpu_bf16_flags("") == []


def test_fp32_without_native_bf16(model, monkeypatch) -> None:
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda cpuinfo=None: [])
    choice = choose_dtype(model, preprocess(phantom(0), SPEC))
    assert choice.name == "fp32" and "neither AMX nor AVX512-BF16" in choice.reason and choice.cls_cosine is None


def test_bf16_kept_only_when_it_matches_fp32(model, monkeypatch) -> None:
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda cpuinfo=None: ["amx_bf16"])
    pre = preprocess(phantom(0), SPEC)
    choice = choose_dtype(model, pre)
    assert choice.name == "bf16" and choice.cls_cosine >= 0.999 and choice.patch_cosine >= 0.999
    strict = choose_dtype(model, pre, min_cosine=1.0 + 1e-9)  # nothing can reach it: fall back to fp32
    assert strict.name == "fp32" and "differs from fp32" in strict.reason


@pytest.mark.parametrize("flags", [[], ["avx512_bf16"]])
def test_cli_dtype_auto(model_dir: Path, scans_dir: Path, tmp_path: Path, monkeypatch, flags) -> None:
    from voxelfm.cli.main import app
    from voxelfm.embed import EmbeddingStore

    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda cpuinfo=None: flags)
    result = CliRunner().invoke(app, ["embed", str(scans_dir / "case0.nii.gz"), "--model", str(model_dir), "--out",
                                      str(tmp_path / "store"), "--workers", "0", "--no-progress", "--device", "cpu",
                                      "--dtype", "auto"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"--dtype auto: {'bf16' if flags else 'fp32'}" in text
    assert EmbeddingStore(tmp_path / "store").ids() == ["case0"]
