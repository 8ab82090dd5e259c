"""Writers for NIfTI files and DICOM CT series (used by the phantom cohort, tests and users).

Both write the world geometry faithfully: reading the result back with :func:`voxelfm.io.load_ct`
gives the same canonical array, spacing and origin.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Literal

import numpy as np

from voxelfm.core.atomic import atomic_path
from voxelfm.core.errors import InputValidationError, located
from voxelfm.core.geometry import Geometry
from voxelfm.core.types import CTVolume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: Stored pixel type -> (RescaleIntercept, lowest and highest stored value, numpy type).
PIXEL_ENCODINGS = {"uint16": (-1024.0, 0, 65535, np.uint16), "int16": (0.0, -32768, 32767, np.int16)}


def write_nifti(array: np.ndarray, geometry: Geometry, path: str | os.PathLike[str]) -> Path:
    """Write a (z, y, x) array with its LPS geometry as NIfTI (``.nii`` or ``.nii.gz``).

    SimpleITK converts LPS to NIfTI's RAS affine (qform and sform both set). Integer arrays keep
    their dtype (label maps), everything else is written as float32. Written atomically.
    """
    import SimpleITK as sitk

    from voxelfm.io.itk import array_to_image

    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise InputValidationError(located(path, "NIfTI path must end with .nii or .nii.gz"))
    array = np.asarray(array)
    if tuple(array.shape) != tuple(geometry.shape):
        raise InputValidationError(located(path, f"array shape {array.shape} != geometry shape {geometry.shape}"))
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32)
    image = array_to_image(array, geometry)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name must keep the NIfTI suffix: SimpleITK picks the writer (and gzip) from it.
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    with atomic_path(path) as tmp:
        tmp_named = tmp.with_name(tmp.name + suffix)
        try:
            sitk.WriteImage(image, str(tmp_named), useCompression=suffix == ".nii.gz")
            os.replace(tmp_named, tmp)
        finally:
            if tmp_named.exists():
                tmp_named.unlink()
    return path


def _ds_number(value: float) -> str:
    """Format a float for a DICOM DS element (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in {"-0", ""}:
        text = "0"
    if len(text) > 16:
        text = f"{value:.8g}"
    return text


def write_dicom_series(
    volume: CTVolume,
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    patient_id: str = "ANON",
    patient_name: str = "ANON",
    series_description: str = "",
    series_number: int = 1,
    instance_prefix: str = "",
    slice_order: Literal["ascending", "descending"] = "ascending",
    pixel_dtype: Literal["uint16", "int16"] = "uint16",
    modality: str = "CT",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
) -> list[Path]:
    """Write ``volume`` as a DICOM CT series, one file per k-slice, and return the file paths.

    Real tags: CT Image Storage, Explicit VR Little Endian, ImagePositionPatient (LPS centre of the
    slice's first pixel), ImageOrientationPatient (row = index axis i, column = axis j of
    ``volume.direction``), PixelSpacing [row spacing (y), column spacing (x)], SliceThickness and
    SpacingBetweenSlices (z), RescaleIntercept/Slope. HU are rounded and clipped to the stored
    type's range first (uint16: intercept -1024, so HU < -1024 become -1024 instead of wrapping;
    int16: intercept 0). ``slice_order`` sets the instance numbering (and file names): "descending"
    numbers from the last k-slice, as many scanners do. Files are named
    ``{instance_prefix}{instance:05d}.dcm``.
    """
    from pydicom.uid import generate_uid

    folder = Path(folder)
    array = np.asarray(volume.array)
    geometry = volume.geometry
    if array.ndim != 3 or tuple(array.shape) != tuple(geometry.shape):
        raise InputValidationError(located(folder, f"volume array {array.shape} does not match geometry {geometry.shape}"))
    if not np.all(np.isfinite(array)):
        raise InputValidationError(located(folder, "volume contains NaN/inf values"))
    if slice_order not in ("ascending", "descending"):
        raise InputValidationError(located(folder, f"slice_order must be 'ascending' or 'descending', got {slice_order!r}"))
    if pixel_dtype not in PIXEL_ENCODINGS:
        raise InputValidationError(located(folder, f"pixel_dtype must be 'uint16' or 'int16', got {pixel_dtype!r}"))
    intercept, lo, hi, dtype = PIXEL_ENCODINGS[pixel_dtype]

    now = _dt.datetime.now()
    tags = {
        "SeriesInstanceUID": series_uid or generate_uid(),
        "StudyInstanceUID": study_uid or generate_uid(),
        "FrameOfReferenceUID": frame_of_reference_uid or generate_uid(),
        "PatientID": patient_id,
        "PatientName": patient_name,
        "Date": now.strftime("%Y%m%d"),
        "Time": now.strftime("%H%M%S"),
        "Modality": modality,
        "ImageType": list(image_type),
        "SeriesDescription": series_description,
        "SeriesNumber": int(series_number),
    }
    stored = np.clip(np.rint(array.astype(np.float64) - intercept), lo, hi).astype(dtype)
    n_slices = array.shape[0]
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for k in range(n_slices):
        instance = k + 1 if slice_order == "ascending" else n_slices - k
        path = folder / f"{instance_prefix}{instance:05d}.dcm"
        ds = _slice_dataset(path, tags, geometry, k, instance, stored[k], intercept)
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_dataset(path: Path, tags: dict, geometry: Geometry, k: int, instance: int, stored: np.ndarray,
                   intercept: float):
    """The DICOM dataset of k-slice ``k``: the series ``tags``, its position and its stored pixels."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    sop_uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = tags["StudyInstanceUID"]
    ds.SeriesInstanceUID = tags["SeriesInstanceUID"]
    ds.FrameOfReferenceUID = tags["FrameOfReferenceUID"]
    ds.PatientID = tags["PatientID"]
    ds.PatientName = tags["PatientName"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = tags["Date"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = tags["Time"]
    ds.Modality = tags["Modality"]
    ds.ImageType = tags["ImageType"]
    ds.SeriesDescription = tags["SeriesDescription"]
    ds.SeriesNumber = tags["SeriesNumber"]
    ds.InstanceNumber = int(instance)
    ds.PositionReferenceIndicator = ""
    _set_geometry(ds, geometry, k)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0 if stored.dtype == np.uint16 else 1
    ds.RescaleIntercept = _ds_number(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def _set_geometry(ds, geometry: Geometry, k: int) -> None:
    """Position, orientation, spacing and slice location of k-slice ``k`` (LPS, mm)."""
    row_dir = geometry.direction[:, 0]
    col_dir = geometry.direction[:, 1]
    dz, dy, dx = geometry.spacing
    position = geometry.index_to_world(np.array([k, 0.0, 0.0]))
    ds.ImagePositionPatient = [_ds_number(v) for v in position]
    ds.ImageOrientationPatient = [_ds_number(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [_ds_number(dy), _ds_number(dx)]
    ds.SliceThickness = _ds_number(dz)
    ds.SpacingBetweenSlices = _ds_number(dz)
    ds.SliceLocation = _ds_number(float(position @ np.cross(row_dir, col_dir)))
