"""Report records, frozen features (in memory or from an ``EmbeddingStore``) and training batches.

Features are read as a mapping ``{scan_id: (cls (C,), patch (d, h, w, C))}`` of numpy arrays, so the
report model can be trained on features computed anywhere (a store, loaded as the probes'
:class:`~voxelfm.probes.data.FeatureSet`; a backbone run in a notebook; synthetic arrays in tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from voxelfm.core.errors import DataError, StoreError, located

if TYPE_CHECKING:
    from voxelfm.probes.data import FeatureSet

#: ``{scan_id: (cls (C,), patch (d, h, w, C))}``; a :class:`~voxelfm.probes.data.FeatureSet` is one.
FeatureMap = Mapping[str, tuple[np.ndarray, np.ndarray]]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ReportRecord:
    """One line of ``reports.jsonl`` (the phantom cohort's format)."""

    scan_id: str
    split: str
    report: str
    patient_id: str = ""
    findings: str = ""
    impression: str = ""

    def text(self, field: str = "report") -> str:
        """The report text used as training target / reference (``report``, ``findings``, ...)."""
        value = getattr(self, field, None)
        if not isinstance(value, str):
            raise DataError(located(self.scan_id, f"record has no text field {field!r}"))
        return value

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def load_reports(path: str | os.PathLike[str]) -> list[ReportRecord]:
    """Read a ``reports.jsonl`` file; each line needs ``scan_id``, ``split`` and ``report``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(located(p, "reports file not found"))
    records: list[ReportRecord] = []
    seen: set[str] = set()
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(located(p, f"line {lineno}: invalid JSON ({exc.msg})")) from exc
        missing = [k for k in ("scan_id", "split", "report") if k not in data]
        if missing:
            raise DataError(located(p, f"line {lineno}: missing keys {missing}"))
        if data["split"] not in SPLITS:
            raise DataError(located(p, f"line {lineno}: split {data['split']!r} not in {SPLITS}"))
        if data["scan_id"] in seen:
            raise DataError(located(p, f"line {lineno}: duplicate scan_id {data['scan_id']!r}"))
        seen.add(data["scan_id"])
        records.append(ReportRecord(
            scan_id=str(data["scan_id"]), split=str(data["split"]), report=str(data["report"]),
            patient_id=str(data.get("patient_id", "")), findings=str(data.get("findings", "")),
            impression=str(data.get("impression", ""))))
    if not records:
        raise DataError(located(p, "no report records"))
    return records


def write_records(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Atomically write dicts as JSON lines."""
    from voxelfm.core.atomic import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(dict(r)) + "\n" for r in rows))


def features_from_store(store_path: str | os.PathLike[str], ids: Iterable[str] | None = None) -> FeatureSet:
    """The :class:`~voxelfm.probes.data.FeatureSet` of a store (all ok entries by default), with patches.

    The same loader the probes use (geometry and the one-model check included); it reads as a
    :data:`FeatureMap`. Every requested id must have an embedding.
    """
    from voxelfm.probes.data import FeatureSet

    wanted = None if ids is None else [str(i) for i in ids]
    features = FeatureSet.from_store(store_path, wanted, patches=True)
    missing = [i for i in wanted or () if i not in features]
    if missing:
        raise StoreError(located(store_path, f"no embedding for scan {missing[0]!r}"
                                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")))
    return features


def check_features(features: FeatureMap, ids: Sequence[str]) -> int:
    """Validate shapes for ``ids``; return the common embedding width C."""
    width: int | None = None
    for scan_id in ids:
        if scan_id not in features:
            raise DataError(located(scan_id, "no features for this scan"))
        cls, patch = features[scan_id]
        if np.ndim(cls) != 1 or np.ndim(patch) != 4 or patch.shape[-1] != np.shape(cls)[0]:
            raise DataError(located(scan_id, f"features need cls (C,) and patch (d,h,w,C); got "
                                             f"{np.shape(cls)} and {np.shape(patch)}"))
        if not (np.isfinite(cls).all() and np.isfinite(patch).all()):
            raise DataError(located(scan_id, "features contain NaN or inf"))
        if width is None:
            width = int(cls.shape[0])
        elif width != cls.shape[0]:
            raise DataError(located(scan_id, f"embedding width {cls.shape[0]} differs from {width}"))
    if width is None:
        raise DataError("no scans to check")
    return width


def pool_grid(patch: np.ndarray, max_tokens: int) -> np.ndarray:
    """Average-pool a (d,h,w,C) grid (same factor per axis) until it has ≤ ``max_tokens`` tokens."""
    grid = patch
    while int(np.prod(grid.shape[:3])) > max_tokens:
        t = torch.from_numpy(np.ascontiguousarray(grid)).permute(3, 0, 1, 2)[None]
        out_shape = [max(1, (n + 1) // 2) for n in grid.shape[:3]]
        t = torch.nn.functional.adaptive_avg_pool3d(t, out_shape)
        grid = t[0].permute(1, 2, 3, 0).numpy()
    return grid


@dataclass
class VisionTokens:
    """Per-scan token matrix for the projector: patches (row-major z,y,x) then CLS."""

    tokens: torch.Tensor  # (N + 1, C)
    grid: tuple[int, int, int]
    has_cls: bool = False  # the last row is the CLS token


def vision_tokens(cls: np.ndarray, patch: np.ndarray, *, use_cls: bool = True,
                  max_tokens: int = 4096) -> VisionTokens:
    """Flatten one scan's features into projector input tokens."""
    grid = pool_grid(np.asarray(patch, dtype=np.float32), max_tokens)
    flat = torch.from_numpy(np.ascontiguousarray(grid.reshape(-1, grid.shape[-1])))
    if use_cls:
        flat = torch.cat([flat, torch.from_numpy(np.asarray(cls, dtype=np.float32))[None]], dim=0)
    return VisionTokens(flat, tuple(int(n) for n in grid.shape[:3]), has_cls=use_cls)  # type: ignore[arg-type]


def batch_cls_mask(items: Sequence[VisionTokens]) -> torch.Tensor:
    """``(B, N)`` True where :func:`batch_tokens` put a scan's CLS token (its last real row)."""
    n_max = max(it.tokens.shape[0] for it in items)
    mask = torch.zeros(len(items), n_max, dtype=torch.bool)
    for b, it in enumerate(items):
        if it.has_cls:
            mask[b, it.tokens.shape[0] - 1] = True
    return mask


def batch_tokens(items: Sequence[VisionTokens], hidden_dim: int, *, use_cls: bool,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad token matrices into ``(tokens (B,N,C), padding_mask (B,N), positions (B,N,hidden))``."""
    from voxelfm.report.projector import grid_position_code

    n_max = max(it.tokens.shape[0] for it in items)
    width = items[0].tokens.shape[1]
    tokens = torch.zeros(len(items), n_max, width)
    mask = torch.ones(len(items), n_max, dtype=torch.bool)
    positions = torch.zeros(len(items), n_max, hidden_dim)
    for b, it in enumerate(items):
        n = it.tokens.shape[0]
        tokens[b, :n] = it.tokens
        mask[b, :n] = False
        code = grid_position_code(it.grid, hidden_dim)
        positions[b, : code.shape[0]] = code  # the CLS token (if any) keeps a zero position code
    return tokens, mask, positions
