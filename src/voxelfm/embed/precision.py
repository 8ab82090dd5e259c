"""``--dtype auto``: bfloat16 where the hardware runs it fast *and* it matches fp32 on real data.

bf16 autocast only pays on CPUs with AMX or AVX512-BF16 (elsewhere it is emulated and slower
than fp32) and on CUDA devices that support it. Where it is fast, the first readable scan of the
run is embedded in fp32 and in bf16; bf16 is kept only if the CLS cosine and the mean per-patch
cosine to fp32 both reach ``min_cosine`` (0.999). Otherwise the run uses fp32. The hardware
check is the one every command shares (:func:`voxelfm.core.device.fast_bf16`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxelfm.core.device import cpu_bf16_flags, fast_bf16

log = logging.getLogger(__name__)
MIN_COSINE = 0.999


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype ``--dtype auto`` chose (``fp32`` or ``bf16``), why, and the measured agreement."""

    name: str
    reason: str
    cls_cosine: float | None = None
    patch_cosine: float | None = None


def choose_dtype(model: Any, pre: Any, *, device: Any = "cpu", min_cosine: float = MIN_COSINE,
                 mode: str = "3d") -> DtypeChoice:
    """bf16 when it is fast on ``device`` and agrees with fp32 on ``pre`` (a preprocessed scan)."""
    from voxelfm.embed.extract import features_from_preprocessed

    fast, why = fast_bf16(device)
    if not fast:
        return DtypeChoice("fp32", why)
    ref = features_from_preprocessed(model, pre, device=device, dtype=None, mode=mode)
    low = features_from_preprocessed(model, pre, device=device, dtype="bf16", mode=mode)
    cls_cos = float(_cosine(ref.cls.reshape(-1), low.cls.reshape(-1)))
    c = ref.patch.shape[-1]
    patch_cos = float(_cosine(ref.patch.reshape(-1, c), low.patch.reshape(-1, c)).mean()) if ref.patch.size else 1.0
    ok = cls_cos >= min_cosine and patch_cos >= min_cosine
    verdict = "agrees with" if ok else "differs from"
    reason = (f"{why}; bf16 {verdict} fp32 on the first scan (CLS cosine {cls_cos:.6f}, mean patch cosine "
              f"{patch_cos:.6f}, threshold {min_cosine})")
    return DtypeChoice("bf16" if ok else "fp32", reason, cls_cos, patch_cos)


def choose_dtype_for_jobs(model: Any, jobs: Sequence[Any], spec: Any, *, device: Any = "cpu",
                          min_cosine: float = MIN_COSINE, mode: str = "3d", tries: int = 3) -> DtypeChoice:
    """:func:`choose_dtype` on the first of ``jobs`` that reads (up to ``tries``); fp32 if none does."""
    fast, why = fast_bf16(device)
    if not fast:
        return DtypeChoice("fp32", why)
    from voxelfm.core.errors import VoxelFMError
    from voxelfm.io import load_ct
    from voxelfm.models.backbones import prepare_volume

    for job in list(jobs)[:tries]:
        try:
            pre = prepare_volume(load_ct(job.source), spec)
        except VoxelFMError as exc:
            log.info("--dtype auto: %s unreadable for the bf16 check (%s)", job.scan_id, exc)
            continue
        return choose_dtype(model, pre, device=device, min_cosine=min_cosine, mode=mode)
    return DtypeChoice("fp32", f"{why}, but no scan could be read for the bf16 accuracy check")


__all__ = ["MIN_COSINE", "DtypeChoice", "choose_dtype", "choose_dtype_for_jobs", "cpu_bf16_flags", "fast_bf16"]
