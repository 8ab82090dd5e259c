"""Read back a cohort written by :func:`~voxelfm.data.phantom.write_cohort`, by scan id."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from voxelfm.core.types import CTVolume
from voxelfm.data.phantom.constants import FINDINGS


class CohortReader:
    """The scans, label maps and planted findings of an on-disk cohort (``labels.csv`` rows by
    scan id), each file read on first use and the most recent ones kept in memory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        import pandas as pd

        self.root = Path(root)
        self.labels = pd.read_csv(self.root / "labels.csv").set_index("scan_id")
        self.ct = lru_cache(maxsize=16)(self._ct)
        self.label_map = lru_cache(maxsize=8)(self._label_map)

    def _ct(self, scan_id: str) -> CTVolume:
        from voxelfm.io import load_ct

        return load_ct(self.root / str(self.labels.loc[scan_id, "path"]))

    def _label_map(self, scan_id: str) -> np.ndarray:
        from voxelfm.io import load_label_map

        return load_label_map(self.root / str(self.labels.loc[scan_id, "label_path"]))[0]

    def findings(self, scan_id: str) -> list[str]:
        """The findings planted in the scan."""
        row = self.labels.loc[scan_id]
        return [f for f in FINDINGS if f in row.index and int(row[f]) == 1]

    def ids(self, split: str) -> list[str]:
        """Scan ids of one split, in ``labels.csv`` order."""
        return [str(s) for s in self.labels.index[self.labels["split"] == split]]

    def axial_index(self, scan_id: str) -> int:
        """The axial slice through the largest nodule when there is one, else the middle slice."""
        import pandas as pd

        vol = self.ct(scan_id)
        z_norm = float(pd.to_numeric(self.labels.loc[scan_id].get("nodule_z_norm"), errors="coerce"))
        if np.isfinite(z_norm):  # empty when the scan has no nodule
            return int(np.clip(z_norm * vol.shape[0], 0, vol.shape[0] - 1))
        return vol.shape[0] // 2


__all__ = ["CohortReader"]
