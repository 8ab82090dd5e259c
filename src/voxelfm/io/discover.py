"""Find the CT scans under a set of paths for batch commands (embed, info over a cohort)."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from voxelfm.core.errors import CTReadError, located

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".zip")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Files that are never DICOM slices: not worth opening when looking for a DICOM folder.
_NOT_DICOM = {".raw", ".zraw", ".json", ".csv", ".txt", ".md", ".png", ".jpg", ".jpeg", ".gif", ".bmp",
              ".tif", ".tiff", ".pdf", ".xml", ".html", ".py", ".yaml", ".yml", ".log", ".npy", ".npz",
              ".pt", ".pth", ".jsonl", ".tsv"}
#: Sub-folders of a cohort that hold label maps / masks, not CT (``voxelfm phantom`` writes ``labels/``;
#: nnU-Net style cohorts use ``labelsTr``/``labelsTs``).
LABEL_FOLDERS = {"labels", "labelstr", "labelsts", "labelsva", "masks", "segmentations"}
#: File-name endings of label maps next to their scans (``case1_seg.nii.gz``).
_LABEL_NAME = re.compile(r"[_.-](seg|segmentation|label|labels|labelmap|mask)$", re.IGNORECASE)
NIFTI_INTENT_LABEL = 1002
log = logging.getLogger(__name__)


def _image_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)


def has_dicom_magic(path: Path) -> bool:
    """'DICM' at byte 128: every DICOM file voxelfm can read has it (pydicom refuses the others)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _is_dicom_dir(files: list[Path]) -> bool:
    """True when any candidate file is DICOM, wherever it sits in the listing (no header parse:
    reading 132 bytes per file until the first hit keeps this cheap)."""
    candidates = (f for f in files if _image_suffix(f.name) is None and f.suffix.lower() not in _NOT_DICOM)
    return any(has_dicom_magic(f) for f in candidates)


def label_map_reason(path: Path) -> str | None:
    """Why the image file ``path`` is a label map rather than a CT, or None (header only, cheap).

    A name ending in ``_seg``/``_label``/``_mask`` (and similar), or a NIfTI header marked as a
    label map (intent NIFTI_INTENT_LABEL) or stored as 8-bit integers (no CT fits in 8 bits).
    """
    stem = _strip_suffix(path.name)
    if _LABEL_NAME.search(stem):
        return f"name ends in {_LABEL_NAME.search(stem).group(0)!r}"  # type: ignore[union-attr]
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    try:
        import nibabel as nib
        from nibabel.openers import ImageOpener

        with ImageOpener(path) as handle:
            header = nib.Nifti1Header.from_fileobj(handle, check=False)
        intent = int(header["intent_code"])
        dtype = header.get_data_dtype()
        slope = float(header["scl_slope"])
    except Exception:  # noqa: BLE001 - unreadable headers are reported when the scan is loaded
        return None
    if intent == NIFTI_INTENT_LABEL:
        return "NIfTI intent is 'label'"
    if dtype.kind in "iub" and dtype.itemsize == 1 and (not np.isfinite(slope) or slope in (0.0, 1.0)):
        return f"stored as {dtype} (8-bit integers cannot hold CT numbers)"
    return None


def _scan_id(relative: Path) -> str:
    text = "_".join(relative.parts) if relative.parts else "scan"
    return _UNSAFE.sub("_", text).strip("._") or "scan"


def _strip_suffix(name: str) -> str:
    suffix = _image_suffix(name)
    return name[: -len(suffix)] if suffix else name


def discover_sources(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, exclude: Sequence[str] = (),
    skip_label_maps: bool = True,
) -> list[tuple[str, Path]]:
    """List ``(scan_id, path)`` for every scan under ``paths``.

    A scan is an image file (NIfTI, MHA/MHD, NRRD, or a zip of DICOM) or a folder that directly
    holds DICOM files (any file names, found wherever they sit among other files). Folders are
    searched recursively; ``exclude`` holds glob patterns matched against each path relative to
    its root (e.g. ``"labels/*"``). With ``skip_label_maps`` (default), label maps found inside a
    folder are left out with one INFO log line: sub-folders named like ``labels/``, ``labelsTr/``,
    ``masks/``, ``segmentations/`` (a ``voxelfm phantom`` cohort), and files that
    :func:`label_map_reason` recognises; a path given directly is always kept. Scan ids come from
    the file stem / folder name, widened to the relative path (and then numbered) when two would
    collide, and contain only ``[A-Za-z0-9._-]``.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[tuple[Path, Path]] = []  # (relative id path, source path)

    def unreadable(exc: OSError) -> None:
        log.warning("%s", located(exc.filename, f"cannot list this folder ({exc.strerror}); its scans are skipped"))

    for root in (Path(p) for p in paths):
        if not root.exists():
            raise CTReadError(located(root, "no such file or folder"))
        if root.is_file():
            found.append((Path(_strip_suffix(root.name)), root))
            continue
        for current, dirs, names in os.walk(root, onerror=unreadable):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            here = Path(current)
            rel_dir = here.relative_to(root)
            if any(fnmatch.fnmatch(str(rel_dir), pat) for pat in exclude) and rel_dir.parts:
                dirs[:] = []
                continue
            if skip_label_maps and rel_dir.parts and here.name.lower() in LABEL_FOLDERS:
                n = sum(len(files) for _, _, files in os.walk(here))
                log.info("%s", located(here, f"skipped: a label-map folder ({n} files), not CT scans"))
                dirs[:] = []
                continue
            files = [here / n for n in sorted(names) if not n.startswith(".")]
            files = [f for f in files if not any(fnmatch.fnmatch(str(f.relative_to(root)), pat) for pat in exclude)]
            images = [f for f in files if _image_suffix(f.name)]
            labels = []
            for f in images:
                reason = label_map_reason(f) if skip_label_maps else None
                if reason:
                    labels.append(f"{f.name} ({reason})")
                    continue
                found.append((Path(root.name) / f.relative_to(root).with_name(_strip_suffix(f.name)), f))
            if labels:
                shown = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
                log.info("%s", located(here, f"skipped {len(labels)} label map(s), not CT scans: {shown}"))
            image_set = set(images)
            others = [f for f in files if f not in image_set]
            if others and _is_dicom_dir(others):
                found.append((Path(root.name) / rel_dir, here))
    if not found:
        raise CTReadError(located(", ".join(str(p) for p in paths), "no CT sources found (DICOM folders, NIfTI, MHA/MHD, NRRD or zip)"))
    short = [_scan_id(Path(rel.name)) for rel, _ in found]
    counts = Counter(short)
    ids = [s if counts[s] == 1 else _scan_id(rel) for s, (rel, _) in zip(short, found, strict=True)]
    seen: Counter[str] = Counter()
    result = []
    for scan_id, (_, path) in zip(ids, found, strict=True):
        seen[scan_id] += 1
        unique = scan_id if seen[scan_id] == 1 else f"{scan_id}-{seen[scan_id]}"
        result.append((unique, path))
    return result
