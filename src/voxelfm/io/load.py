"""``load_ct``: read any supported CT source into a canonical-orientation :class:`CTVolume`."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.errors import CTReadError, GeometryError, InputValidationError, located
from voxelfm.core.geometry import Geometry
from voxelfm.core.types import CTVolume
from voxelfm.io.dicom import SeriesInfo
from voxelfm.io.validate import (
    HU_BAND,
    check_finite,
    check_hu,
    check_readable,
    check_shape,
    check_spacing,
    constant_warning,
    describe_exception,
)

ITK_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
ARRAY_SUFFIXES = (".npy", ".npz")
TORCH_SUFFIXES = (".pt", ".pth")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*ITK_SUFFIXES, *ARRAY_SUFFIXES, *TORCH_SUFFIXES, ".zip"):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def load_ct(
    source: Any,
    *,
    spacing: Sequence[float] | None = None,
    series_uid: str | None = None,
    origin: Sequence[float] | None = None,
    direction: Any = None,
    allow_non_hu: bool = False,
    allow_missing_slices: bool = False,
) -> CTVolume:
    """Read a CT scan as float32 HU in the canonical LPS layout (``array[k, j, i]``, see core).

    ``source``: a DICOM folder (searched recursively), a ``.zip`` of DICOM files, a NIfTI
    (``.nii``/``.nii.gz``), MHA/MHD/NRRD file, a ``.npy``/``.npz``/``.pt`` array file, or an
    in-memory numpy array / torch tensor in (z, y, x) order. Arrays need ``spacing`` (z, y, x) mm
    (never assumed); ``origin`` (LPS x, y, z) and ``direction`` (ITK 3x3) are optional and, when
    given, the array is reoriented to the canonical layout. ``series_uid`` picks a DICOM series.
    Values are not clipped here (preprocessing clips). Raises a :class:`VoxelFMError` subclass
    naming the source for anything unreadable or implausible (``allow_non_hu`` skips the HU check).
    A DICOM series with slice files that cannot be read is refused unless ``allow_missing_slices``
    (then they are left out with a warning). Non-finite values never leave this function.
    """
    if isinstance(source, np.ndarray) or _is_tensor(source):
        array = _tensor_to_numpy(source) if _is_tensor(source) else source
        volume = _from_array(array, "<array>", spacing, origin, direction)
    else:
        if not isinstance(source, str | os.PathLike):
            raise InputValidationError(f"cannot load a CT from an object of type {type(source).__name__}")
        path = Path(source)
        if str(source) == "":
            raise CTReadError("empty path given as CT source")
        if not path.exists():
            raise CTReadError(located(path, "no such file or folder"))
        check_readable(path)
        suffix = _suffix(path)
        is_array_file = suffix in ARRAY_SUFFIXES or suffix in TORCH_SUFFIXES
        given = [n for n, v in (("spacing", spacing), ("origin", origin), ("direction", direction)) if v is not None]
        if given and (path.is_dir() or not is_array_file):
            raise InputValidationError(
                located(path, f"{'/'.join(given)} apply only to array sources; this source carries its own geometry")
            )
        if path.is_dir():
            volume = _load_dicom_folder(path, series_uid, display=path, allow_missing=allow_missing_slices)
        else:
            if path.stat().st_size == 0:
                raise CTReadError(located(path, "file is empty"))
            if suffix == ".zip":
                volume = _load_dicom_zip(path, series_uid, allow_missing_slices)
            elif suffix in ITK_SUFFIXES:
                volume = _load_itk_file(path)
            elif is_array_file:
                volume = _from_array(_read_array_file(path, suffix), path, spacing, origin, direction)
            else:
                volume = _load_single_dicom_or_fail(path, series_uid)
    geometry = volume.geometry
    if not (np.all(np.isfinite(geometry.origin)) and np.all(np.isfinite(geometry.direction))):
        raise InputValidationError(located(volume.source, f"origin {geometry.origin} or direction is not finite"))
    # One min/max pass: NaN propagates into both, so this is also the last finiteness guard.
    lo, hi = (float(np.min(volume.array)), float(np.max(volume.array))) if volume.array.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        check_finite(volume.array, volume.source)
    if lo == hi:
        volume.warnings.append(constant_warning(lo, volume.array.shape))
    if not allow_non_hu:
        # No air below -100 HU: a label map (a few integers) would otherwise pass as "HU".
        labels = label_values(volume.array) if lo > -HU_BAND and lo != hi else None
        if labels is not None:
            shown = ", ".join(f"{v:g}" for v in labels[:8]) + (", ..." if len(labels) > 8 else "")
            raise InputValidationError(located(volume.source, f"looks like a label map, not a CT: only {len(labels)} "
                                               f"distinct integer values ({shown}). Pass allow_non_hu=True to load anyway"))
        volume.warnings.extend(check_hu(volume.array, volume.source, value_range=(lo, hi)))
    return volume


def label_values(array: np.ndarray, limit: int = 64) -> np.ndarray | None:
    """The distinct values of ``array`` when it holds at most ``limit`` integers (a label map), else None."""
    sample = array.reshape(-1)[:: max(1, array.size // 1_000_000)]  # cheap rejection on a sample first
    if np.unique(sample).size > limit or not np.array_equal(sample, np.rint(sample)):
        return None
    values = np.unique(array)
    if values.size > limit or not np.array_equal(values, np.rint(values)):
        return None
    return values


def _is_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _tensor_to_numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().to("cpu").float().numpy()


def _from_array(
    array: np.ndarray, source: object, spacing: Sequence[float] | None,
    origin: Sequence[float] | None, direction: Any,
) -> CTVolume:
    from voxelfm.io.itk import to_canonical

    if spacing is None:
        raise InputValidationError(
            located(source, "arrays carry no geometry: pass spacing=(z, y, x) in mm (voxelfm never assumes 1 mm)")
        )
    array = np.asarray(array)
    check_shape(array.shape, source)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        raise InputValidationError(located(source, f"array dtype {array.dtype} is not real numeric"))
    check_finite(array, source)
    values = check_spacing(spacing, source)
    try:
        geometry = Geometry(
            shape=array.shape, spacing=values,
            origin=(0.0, 0.0, 0.0) if origin is None else tuple(origin),
            direction=np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64),
        )
    except (ValueError, TypeError) as exc:
        raise InputValidationError(located(source, f"invalid origin/direction ({describe_exception(exc)})")) from exc
    d = geometry.direction
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise InputValidationError(located(source, "direction must be an orthonormal 3x3 matrix"))
    stored = geometry.orientation_code()
    data, geometry = to_canonical(array.astype(np.float32, copy=False), geometry)
    return CTVolume(array=np.ascontiguousarray(data, dtype=np.float32), geometry=geometry,
                    source=str(source), series_uid=None, modality="CT",
                    metadata={"stored_orientation": stored})


def _read_array_file(path: Path, suffix: str) -> np.ndarray:
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.keys())
                if len(keys) != 1 and "array" not in keys:
                    raise CTReadError(located(path, f".npz must hold one array (or one named 'array'), found {keys}"))
                return npz["array" if "array" in keys else keys[0]]
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, torch.Tensor):
            raise CTReadError(located(path, f"expected a saved tensor, found {type(obj).__name__}"))
        return _tensor_to_numpy(obj)
    except CTReadError:
        raise
    except pickle.UnpicklingError as exc:
        raise CTReadError(located(path, "not a weights-only tensor file: it pickles other objects (refused unread; "
                                  "save the volume with torch.save(tensor) or numpy.save)")) from exc
    except Exception as exc:  # numpy/zip/pickle raise many types for corrupt files
        raise CTReadError(located(path, f"cannot read array file ({describe_exception(exc)})")) from exc


def read_image_file(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI/MHA/MHD/NRRD file as a canonical-orientation (z, y, x) array and geometry."""
    array, geometry, _ = _read_image_file(path)
    return array, geometry


def _read_image_file(path: Path) -> tuple[np.ndarray, Geometry, str]:
    """Array, geometry (canonical) and the file's own orientation code.

    Geometry comes from SimpleITK (LPS, qform/sform handled), except for NIfTI-2, whose affine
    nibabel reads (SimpleITK does not). NIfTI voxel data is read with nibabel because SimpleITK
    silently zero-fills truncated NIfTI files; nibabel refuses them. NIfTI pixdim and a failing
    affine are checked with nibabel so that the message names the problem.
    """
    import SimpleITK as sitk

    from voxelfm.io.itk import array_to_image, image_to_array, orient_image

    is_nifti = path.name.lower().endswith((".nii", ".nii.gz"))
    nifti = _nifti_image(path) if is_nifti else None
    if not is_nifti:
        _check_data_file(path)
    nifti2 = nifti is not None and int(nifti.header.sizeof_hdr) == 540
    try:
        if nifti2:
            dims, n_comp = int(nifti.header["dim"][0]), 1
        elif is_nifti:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            dims, n_comp = reader.GetDimension(), reader.GetNumberOfComponents()
        else:
            image = sitk.ReadImage(str(path))
            dims, n_comp = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    except RuntimeError as exc:
        if nifti is not None:
            _check_affine(nifti.affine, path)
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = next((line for line in reversed(lines) if "ERROR" not in line and "Exception" not in line), "")
        raise CTReadError(located(path, f"cannot read image ({detail[:160] or 'unsupported or corrupt file'})")) from exc
    if n_comp != 1:
        raise CTReadError(located(path, f"expected a scalar image, got {n_comp} components per voxel"))
    if nifti2 and dims > 3 and int(np.prod(nifti.shape[3:])) == 1:
        dims = 3
    if dims != 3:
        raise InputValidationError(located(path, f"expected a 3D volume, got {dims} dimensions"))
    if nifti2:
        size = tuple(int(n) for n in nifti.shape[:3])
        spacing_xyz, origin, direction = _nifti_affine_geometry(nifti.affine, path)
        spacing = spacing_xyz[::-1]
    elif is_nifti:
        size = reader.GetSize()
        spacing = tuple(reader.GetSpacing())[::-1]
        origin, direction = reader.GetOrigin(), np.asarray(reader.GetDirection()).reshape(3, 3)
    else:
        size = image.GetSize()
        spacing = tuple(image.GetSpacing())[::-1]
    check_shape((size[2], size[1], size[0]), path)
    check_spacing(spacing, path)
    if is_nifti:
        try:
            proxy = nifti.dataobj
            data = proxy.get_unscaled()
            slope, inter = float(proxy.slope), float(proxy.inter)
            if (slope, inter) != (1.0, 0.0):
                # Scale in float32 (nibabel would upcast the whole volume to float64).
                data = data.astype(np.float32) * np.float32(slope) + np.float32(inter)
        except Exception as exc:  # nibabel raises OSError/EOFError/ValueError/zlib errors
            raise CTReadError(located(path, f"cannot read NIfTI voxel data ({describe_exception(exc)})")) from exc
        data = data.reshape(data.shape[:3]) if data.ndim > 3 and int(np.prod(data.shape[3:])) == 1 else data
        if data.shape != tuple(size):
            raise CTReadError(located(path, f"NIfTI data shape {data.shape} does not match its header {tuple(size)}"))
        geometry = Geometry(shape=(size[2], size[1], size[0]), spacing=spacing, origin=origin, direction=direction)
        image = array_to_image(np.ascontiguousarray(data.transpose(2, 1, 0)), geometry)
        del data
    from voxelfm.io.itk import image_geometry

    stored = image_geometry(image).orientation_code()
    array, geometry = image_to_array(orient_image(image))
    return array, geometry, stored


def _nifti_image(path: Path) -> Any:
    """nibabel's lazy image (header only read), after checking the voxel sizes in ``pixdim``.

    SimpleITK replaces a zero pixdim by 1 mm without a word; voxelfm never assumes 1 mm.
    """
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        # The header as stored: nib.load would "fix" a zero pixdim to 1 before we could see it.
        with ImageOpener(path) as handle:
            first = handle.read(4)
            handle.seek(0)
            nifti2 = 540 in (int.from_bytes(first, "little"), int.from_bytes(first, "big"))
            header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header).from_fileobj(handle, check=False)
    except Exception as exc:  # nibabel raises HeaderDataError/OSError/EOFError/ValueError/zlib errors
        raise CTReadError(located(path, f"cannot read image (NIfTI header: {describe_exception(exc)})")) from exc
    n_dims = int(header["dim"][0])
    pixdim = np.asarray(header["pixdim"], dtype=np.float64)
    for axis in range(1, min(n_dims, 3) + 1):
        value = pixdim[axis]
        if not np.isfinite(value) or value == 0:
            raise InputValidationError(
                located(path, f"pixdim[{axis}] (voxel size along the file's {'ijk'[axis - 1]} axis) is {value:g}: "
                        "the header records no spacing (voxelfm never assumes 1 mm)")
            )
    try:
        return nib.load(path)
    except Exception as exc:  # nibabel raises ImageFileError/OSError/EOFError/ValueError
        raise CTReadError(located(path, f"cannot read image (NIfTI header: {describe_exception(exc)})")) from exc


def _check_affine(affine: np.ndarray, path: Path) -> None:
    """Name a degenerate or sheared NIfTI affine (SimpleITK only says it cannot read the file)."""
    affine = np.asarray(affine, dtype=np.float64)
    m = affine[:3, :3]
    if not np.all(np.isfinite(affine)):
        raise GeometryError(located(path, f"degenerate affine: it holds non-finite values {m.round(4).tolist()}"))
    norms = np.linalg.norm(m, axis=0)
    for axis, norm in enumerate(norms):
        if norm < 1e-9:
            raise GeometryError(located(path, f"degenerate affine: column {axis} (the file's {'ijk'[axis]} axis) is zero "
                                        f"({m.round(4).tolist()})"))
    unit = m / norms
    if abs(np.linalg.det(unit)) < 1e-6:
        raise GeometryError(located(path, f"degenerate affine: singular, two voxel axes are parallel ({m.round(4).tolist()})"))
    cosines = np.abs(unit.T @ unit - np.eye(3))
    if cosines.max() > 1e-3:
        angle = float(np.degrees(np.arcsin(min(1.0, cosines.max()))))
        raise GeometryError(located(path, f"sheared affine: voxel axes are {angle:.2f} deg off perpendicular, not a "
                                    f"regular grid voxelfm can resample exactly ({m.round(4).tolist()})"))


def _nifti_affine_geometry(affine: np.ndarray, path: Path) -> tuple[tuple[float, float, float], tuple[float, ...], np.ndarray]:
    """Spacing (x, y, z), LPS origin and ITK direction from a NIfTI (RAS) affine."""
    _check_affine(affine, path)
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    direction = ras_to_lps @ (affine[:3, :3] / spacing)
    origin = ras_to_lps @ affine[:3, 3]
    return tuple(float(v) for v in spacing), tuple(float(v) for v in origin), direction  # type: ignore[return-value]


_METAIO_NUMERIC = ("Offset", "Origin", "Position", "ElementSpacing", "TransformMatrix", "Rotation", "Orientation",
                   "CenterOfRotation", "ElementSize")
_NRRD_NUMERIC = ("space origin", "space directions", "spacings", "thicknesses")


def _check_data_file(path: Path) -> None:
    """Checks on the text header of an MHA/MHD or NRRD file, before SimpleITK reads it.

    The data file a header names must exist (SimpleITK would only say "No such file or
    directory"), and geometry fields must be finite numbers (MetaIO reads "nan" as 0).
    """
    name = path.name.lower()
    if not name.endswith((".mhd", ".mha", ".nhdr", ".nrrd")):
        return
    metaio = name.endswith((".mhd", ".mha"))
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536).decode("latin-1")
    except OSError as exc:
        raise CTReadError(located(path, f"cannot read header ({describe_exception(exc)})")) from exc
    data_file = None
    for line in head.splitlines():
        key, sep, value = line.partition("=" if metaio else ":")
        key, value = key.strip(), value.strip()
        if not metaio and not line.strip():
            break  # end of the NRRD header
        if not sep:
            continue
        if (metaio and key in _METAIO_NUMERIC) or (not metaio and key.lower() in _NRRD_NUMERIC):
            tokens = [t for t in re.split(r"[\s,()]+", value) if t and t.lower() != "none"]
            try:
                numbers = [float(t) for t in tokens]
            except ValueError:
                numbers = [float("nan")]
            if not all(np.isfinite(numbers)):
                raise InputValidationError(located(path, f"header field {key} = {value[:60]!r} is not finite numbers"))
        if (metaio and key == "ElementDataFile") or (not metaio and key.lower() in ("data file", "datafile")):
            data_file = value
            break  # MetaIO: the last header line; NRRD: nothing geometric follows in practice
    if not data_file or data_file.upper() in ("LOCAL", "LIST") or data_file.upper().startswith("LIST") \
            or "%" in data_file or " " in data_file:
        return  # data inside the header file, or a file list / pattern that SimpleITK resolves
    target = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
    if not target.is_file():
        raise CTReadError(located(path, f"the header names the data file {data_file!r}, which does not exist ({target})"))
    if not os.access(target, os.R_OK):
        raise CTReadError(located(path, f"permission denied reading the data file {data_file!r} it names"))


def _load_itk_file(path: Path) -> CTVolume:
    array, geometry, stored = _read_image_file(path)
    check_finite(array, path)
    return CTVolume(array=np.ascontiguousarray(array, dtype=np.float32), geometry=geometry,
                    source=str(path), series_uid=None, modality="CT",
                    metadata={"stored_orientation": stored})


def _load_dicom_folder(folder: Path, series_uid: str | None, display: object, allow_missing: bool = False) -> CTVolume:
    from voxelfm.io.dicom import choose_series, read_series, scan_folder
    from voxelfm.io.itk import to_canonical

    series = scan_folder(folder)
    if not series:
        raise CTReadError(located(display, f"no DICOM files found{_no_dicom_hint(folder)}"))
    chosen = choose_series(series, display, series_uid)
    try:
        array, geometry, warnings = read_series(chosen, display, allow_missing_slices=allow_missing)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        # A DICOM attribute of an unexpected type or shape that no specific check anticipated.
        raise CTReadError(located(display, f"unusable DICOM attribute in series {chosen.uid} "
                                  f"({describe_exception(exc, limit=120)})")) from exc
    check_spacing(geometry.spacing, display)
    stored = geometry.orientation_code()
    array, geometry = to_canonical(array, geometry)
    others = [s for s in series if not s.chosen]
    if others:
        warnings.insert(0, f"{len(series)} series found; loaded {chosen.uid} ({chosen.n_slices} slices)")
    return CTVolume(
        array=np.ascontiguousarray(array, dtype=np.float32), geometry=geometry, source=str(display),
        series_uid=chosen.uid, modality=chosen.modality or "CT", warnings=warnings,
        metadata={"series": [s.to_dict() for s in series], "description": chosen.description,
                  "stored_orientation": stored},
    )


def _no_dicom_hint(folder: Path) -> str:
    """What a folder without readable DICOM holds instead (error path only)."""
    from collections import Counter

    from voxelfm.io.dicom import DICOM_SUFFIXES, list_files, name_pattern
    from voxelfm.io.discover import has_dicom_magic

    files = list_files(folder)
    images = [f for f in files if _suffix(f) in (*ITK_SUFFIXES, *ARRAY_SUFFIXES, *TORCH_SUFFIXES)]
    empty = [f for f in files if f.stat().st_size == 0 and "#" in name_pattern(f.name)]
    numbered = Counter(name_pattern(f.name) for f in empty)  # IM0001, IM0002, ... all empty
    broken = [f for f in files if f.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(f)
              or (f in empty and numbered[name_pattern(f.name)] > 1)]
    if broken:
        names = ", ".join(f.name for f in broken[:3]) + (" ..." if len(broken) > 3 else "")
        return f" that can be read: {len(broken)} DICOM-looking file(s) are empty, truncated or unreadable ({names})"
    if images:
        return (f" (the folder holds {len(images)} image file(s) such as {images[0].name}: give one file to load, "
                "or the folder to voxelfm embed)")
    return ""


@contextlib.contextmanager
def _extracted_zip(path: Path) -> Iterator[Path]:
    """Extract a zip archive into a temporary folder that is removed afterwards."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CTReadError(located(path, f"not a readable zip archive ({describe_exception(exc)})")) from exc
    with archive, tempfile.TemporaryDirectory(prefix="voxelfm-zip-") as tmp:
        try:
            # ZipFile.extractall sanitises member names (no absolute paths, no '..').
            archive.extractall(tmp)
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as exc:
            raise CTReadError(located(path, f"cannot extract zip archive ({describe_exception(exc)})")) from exc
        yield Path(tmp)


def _load_dicom_zip(path: Path, series_uid: str | None, allow_missing: bool = False) -> CTVolume:
    with _extracted_zip(path) as folder:
        return _load_dicom_folder(folder, series_uid, display=path, allow_missing=allow_missing)


def _load_single_dicom_or_fail(path: Path, series_uid: str | None) -> CTVolume:
    """A lone file without a known suffix: accept it if it is a DICOM CT slice."""
    from voxelfm.io.dicom import read_header

    if read_header(path) is None:
        raise CTReadError(
            located(path, "not a supported CT source (expected a DICOM folder or file, .zip, .nii, .nii.gz, "
                    ".mha, .mhd, .nrrd, .npy, .npz or .pt)")
        )
    return _load_dicom_folder(path, series_uid, display=path)


def load_label_map(path: str | os.PathLike[str]) -> tuple[np.ndarray, Geometry]:
    """Read an integer label map (NIfTI/MHA/NRRD) as int16 (z, y, x) in canonical orientation."""
    path = Path(path)
    if not path.is_file():
        raise CTReadError(located(path, "no such label map file"))
    array, geometry = read_image_file(path)
    if not np.issubdtype(array.dtype, np.integer) and (
        not np.all(np.isfinite(array)) or not np.array_equal(array, np.rint(array))
    ):
            raise InputValidationError(located(path, "label map holds non-integer values"))
    if array.size and (array.min() < np.iinfo(np.int16).min or array.max() > np.iinfo(np.int16).max):
        raise InputValidationError(located(path, "label values do not fit in int16"))
    return np.ascontiguousarray(np.rint(array).astype(np.int16)), geometry


def list_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> list[SeriesInfo]:
    """Every series in a DICOM folder, zip or single file, with modality, size and chosen/skipped
    reason (for a zip, ``SeriesInfo.files`` point into a temporary folder that no longer exists)."""
    from voxelfm.io.dicom import choose_series, scan_folder

    path = Path(folder)
    if not path.exists():
        raise CTReadError(located(path, "no such file or folder"))
    check_readable(path)
    if path.is_file() and _suffix(path) == ".zip":
        with _extracted_zip(path) as tmp:
            series = scan_folder(tmp)
    else:
        series = scan_folder(path)
    if series:
        # Nothing loadable is not an error here: every series keeps its skip reason.
        with contextlib.suppress(CTReadError):
            choose_series(series, path, series_uid)
    return series
