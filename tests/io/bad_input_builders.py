"""Build bad or unusual CT inputs with pydicom / nibabel / SimpleITK directly.

Deliberately independent of voxelfm's own writers: the bad-input tests must not share a bug with
the code they check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (6, 24, 24)  # (slices, rows, columns): tiny, but a valid body phantom


def body(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """Air around a soft-tissue disc with a bone spot: a volume that passes the HU checks."""
    rng = np.random.default_rng(seed)
    _, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    hu = np.full(shape, -1000.0)
    hu[(y / 0.8) ** 2 + (x / 0.8) ** 2 < 1] = 40.0
    hu[(y / 0.2) ** 2 + (x / 0.2) ** 2 < 1] = 800.0
    return np.round(hu + rng.normal(0, 5, shape)).astype(np.float32)


def dicom_series(
    folder: Path, hu: np.ndarray | None = None, *, spacing: tuple[float, float, float] = (2.0, 0.8, 0.8),
    names: str = "IM{:04d}", series_uid: str = "1.2.826.0.1.3680043.8.498.1", edit: Any = None,
) -> list[Path]:
    """One pydicom CT slice per z (ascending positions); ``edit(index, dataset)`` may change each."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    hu = body() if hu is None else hu
    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    paths = []
    for k in range(hu.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.PatientID = "BAD"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(k * spacing[0])]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PixelData = np.round(hu[k]).astype("<i2").tobytes()
        if edit is not None:
            edit(k, ds)
        path = folder / names.format(k + 1)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def set_raw(ds: Any, keyword: str, text: str) -> None:
    """Store ``text`` verbatim as the value of a DS/IS element (as a broken scanner would)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement

    tag = tag_for_keyword(keyword)
    raw = text.encode("ascii")
    if len(raw) % 2:
        raw += b" "
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)


def nifti(path: Path, hu: np.ndarray | None = None, *, zooms: tuple[float, float, float] = (0.8, 0.8, 2.0),
          version: int = 1, affine: np.ndarray | None = None, dtype: Any = np.int16) -> Path:
    """A NIfTI file from a (z, y, x) array, written by nibabel (stored as (x, y, z))."""
    import nibabel as nib

    hu = body() if hu is None else hu
    data = np.asarray(hu).transpose(2, 1, 0).astype(dtype)
    cls = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    if affine is None and all(np.isfinite(z) and z > 0 for z in zooms):
        image = cls(data, np.diag([*zooms, 1.0]))
        image.header.set_zooms(zooms)
    else:
        # Header fields set verbatim (nibabel would refuse to decompose a degenerate affine):
        # pixdim as given, the sform if given (else no sform), never a qform.
        header = cls.header_class()
        header.set_data_shape(data.shape)
        header.set_data_dtype(dtype)
        header["pixdim"][1:4] = zooms
        if affine is not None:
            header["srow_x"], header["srow_y"], header["srow_z"] = affine[0], affine[1], affine[2]
        header["sform_code"], header["qform_code"] = (0 if affine is None else 1), 0
        image = cls(data, None, header=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def patch_pixdim(path: Path, axis: int, value: float) -> Path:
    """Overwrite ``pixdim[axis]`` in the stored header bytes (nibabel itself refuses to write 0)."""
    import gzip
    import struct

    raw = path.read_bytes()
    zipped = raw[:2] == b"\x1f\x8b"
    data = bytearray(gzip.decompress(raw) if zipped else raw)
    nifti2 = struct.unpack("<i", data[:4])[0] == 540
    offset, fmt = (104 + 8 * axis, "<d") if nifti2 else (76 + 4 * axis, "<f")
    data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(gzip.compress(bytes(data)) if zipped else bytes(data))
    return path


def mha(path: Path, hu: np.ndarray | None = None, spacing: tuple[float, float, float] = (2.0, 0.8, 0.8)) -> Path:
    """An MHA/MHD (by suffix) written by SimpleITK from a (z, y, x) array."""
    import SimpleITK as sitk

    hu = body() if hu is None else hu
    image = sitk.GetImageFromArray(np.asarray(hu, dtype=np.int16))
    image.SetSpacing(spacing[::-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path
