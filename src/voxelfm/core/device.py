"""One vocabulary for numeric precision and one device resolver, for every command that computes.

Precision names are ``fp32``, ``bf16``, ``fp16`` and ``auto`` everywhere (embedding, pretraining,
report training, the demo). The spellings of torch (``float32``, ``bfloat16``, ``float16``) are
accepted as aliases and turned into the canonical name, which is what resolved configs record.
``auto`` means bf16 where the hardware runs it natively (see :func:`fast_bf16`), else fp32; a
command may add its own accuracy check on top (``voxelfm embed --dtype auto`` does).

Devices are ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present, else CPU). Under torchrun,
``cuda`` without an index and ``auto`` pick the GPU of ``LOCAL_RANK``. Asking for CUDA where there is
none is one :class:`~voxelfm.core.errors.ConfigError` line, before any work starts.

torch is imported inside the functions, so importing this module stays cheap (CLI start-up).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxelfm.core.errors import ConfigError, located

if TYPE_CHECKING:
    import torch

#: Canonical precision names, in the order they are offered.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
#: Other spellings accepted on input (torch's dtype names); resolved configs hold the canonical name.
PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"
# bf16 autocast pays on a CPU only with these instructions; elsewhere it is emulated, slower than fp32.
_FAST_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def canonical_precision(value: Any, *, allowed: tuple[str, ...] = PRECISIONS, key: str = "precision",
                        source: object = None) -> str:
    """``"bfloat16"`` -> ``"bf16"``, ``torch.float32`` -> ``"fp32"``; anything outside ``allowed`` is a
    ``ConfigError`` naming ``key`` and the accepted names (``"<source>: dtype='x': expected one of ..."``)."""
    name = str(value).lower().removeprefix("torch.") if value is not None else ""
    name = PRECISION_ALIASES.get(name, name)
    if name not in allowed:
        choices = ", ".join(repr(c) for c in allowed)
        raise ConfigError(located(source, f"{key}={value!r}: expected one of {choices}"))
    return name


def torch_dtype(precision: Any, *, key: str = "precision") -> torch.dtype:
    """The torch dtype of an explicit precision (``fp32``/``bf16``/``fp16`` or an alias)."""
    import torch

    name = canonical_precision(precision, allowed=("fp32", "bf16", "fp16"), key=key)
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def precision_name(dtype: torch.dtype | None) -> str:
    """``torch.bfloat16`` -> ``"bf16"``; ``None`` (no autocast) -> ``"fp32"``."""
    return "fp32" if dtype is None else canonical_precision(dtype, allowed=("fp32", "bf16", "fp16"))


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bf16 instruction-set flags this CPU reports (``/proc/cpuinfo``; empty where unknown)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return [f for f in _FAST_CPU_FLAGS if f in flags]


def fast_bf16(device: Any = "cpu") -> tuple[bool, str]:
    """Whether bf16 runs natively on ``device``, and why (detected at run time)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA device supports bf16" if ok else "CUDA device without bf16"
    if kind != "cpu":
        return False, f"{kind}: bf16 speed unknown"
    flags = cpu_bf16_flags()
    if flags:
        return True, f"CPU has {', '.join(flags)}"
    return False, "CPU has neither AMX nor AVX512-BF16 (bf16 would be emulated, slower than fp32)"


def autocast_dtype(precision: Any, device: Any = "cpu") -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: None for fp32 (plain float32 compute),
    bfloat16/float16 as named, and for ``auto`` bfloat16 exactly where :func:`fast_bf16` says so."""
    name = canonical_precision(precision)
    if name == "auto":
        return torch_dtype("bf16") if fast_bf16(device)[0] else None
    return None if name == "fp32" else torch_dtype(name)


def _local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        return 0


def resolve_device(name: Any = "auto", *, key: str = "--device") -> torch.device:
    """``auto`` -> the CUDA device of this process (``LOCAL_RANK``) when CUDA is available, else CPU;
    ``cpu``, ``cuda``, ``cuda:N`` as given (``cuda`` gets the ``LOCAL_RANK`` index).

    A name torch does not know, or CUDA asked for where there is none (or fewer devices than the
    index), is one ``ConfigError`` line naming ``key``.
    """
    import torch

    if isinstance(name, torch.device):
        device = name
    else:
        text = str(name).strip().lower() if name is not None else "auto"
        if text == "auto":
            if not torch.cuda.is_available():
                return torch.device("cpu")
            return torch.device("cuda", _local_rank() % torch.cuda.device_count())
        try:
            device = torch.device(text)
        except RuntimeError:
            raise ConfigError(f"{key}={name!r}: unknown device; expected {DEVICE_CHOICES}") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"{key}={name}: CUDA was asked for but no CUDA device is available "
                          "(use cpu or auto)")
    if device.index is None:
        device = torch.device("cuda", _local_rank())
    count = torch.cuda.device_count()
    if device.index >= count:
        raise ConfigError(f"{key}={name}: cuda:{device.index} asked for, but there are {count} CUDA device(s)")
    return device


__all__ = [
    "DEVICE_CHOICES",
    "PRECISIONS",
    "PRECISION_ALIASES",
    "autocast_dtype",
    "canonical_precision",
    "cpu_bf16_flags",
    "fast_bf16",
    "precision_name",
    "resolve_device",
    "torch_dtype",
]
