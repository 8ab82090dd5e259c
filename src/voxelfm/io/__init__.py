"""voxelfm.io: read CT scans with correct geometry, and write NIfTI / DICOM series.

* :func:`load_ct` -> :class:`voxelfm.core.CTVolume` (float32 HU, canonical LPS layout)
* :func:`list_series` -> :class:`SeriesInfo` per series in a DICOM folder or zip
* :func:`load_label_map` -> (int16 array, Geometry)
* :func:`write_nifti`, :func:`write_dicom_series`
* :func:`discover_sources` -> ``[(scan_id, path)]`` for batch commands
"""

from voxelfm.io.dicom import SeriesInfo
from voxelfm.io.discover import discover_sources
from voxelfm.io.load import list_series, load_ct, load_label_map
from voxelfm.io.writers import write_dicom_series, write_nifti

__all__ = [
    "SeriesInfo",
    "discover_sources",
    "list_series",
    "load_ct",
    "load_label_map",
    "write_dicom_series",
    "write_nifti",
]
