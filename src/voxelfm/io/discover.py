"""Find the CT scans under a set of paths for batch commands (embed, info over a cohort)."""

from __future__ import annotations

import fnmatch
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from voxelfm.core.errors import CTReadError, located

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".zip")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _image_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)


def _looks_like_dicom(path: Path) -> bool:
    """Cheap check: 'DICM' magic at byte 128, else a header parse (files without preamble)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:] == b"DICM":
        return True
    from voxelfm.io.dicom import _read_header

    return _read_header(path) is not None


def _is_dicom_dir(files: list[Path], probe: int = 3) -> bool:
    candidates = [f for f in files if _image_suffix(f.name) is None and f.suffix.lower() not in {".raw", ".zraw", ".json", ".csv", ".txt", ".md"}]
    return any(_looks_like_dicom(f) for f in candidates[:probe])


def _scan_id(relative: Path) -> str:
    text = "_".join(relative.parts) if relative.parts else "scan"
    return _UNSAFE.sub("_", text).strip("._") or "scan"


def _strip_suffix(name: str) -> str:
    suffix = _image_suffix(name)
    return name[: -len(suffix)] if suffix else name


def discover_sources(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, exclude: Sequence[str] = (),
) -> list[tuple[str, Path]]:
    """List ``(scan_id, path)`` for every scan under ``paths``.

    A scan is an image file (NIfTI, MHA/MHD, NRRD, or a zip of DICOM) or a folder that directly
    holds DICOM files (any file names). Folders are searched recursively; ``exclude`` holds glob
    patterns matched against each path relative to its root (e.g. ``"labels/*"``). Scan ids come
    from the file stem / folder name, widened to the relative path (and then numbered) when two
    would collide, and contain only ``[A-Za-z0-9._-]``.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[tuple[Path, Path]] = []  # (relative id path, source path)
    for root in (Path(p) for p in paths):
        if not root.exists():
            raise CTReadError(located(root, "no such file or folder"))
        if root.is_file():
            found.append((Path(_strip_suffix(root.name)), root))
            continue
        for current, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            here = Path(current)
            rel_dir = here.relative_to(root)
            if any(fnmatch.fnmatch(str(rel_dir), pat) for pat in exclude) and rel_dir.parts:
                dirs[:] = []
                continue
            files = [here / n for n in sorted(names) if not n.startswith(".")]
            files = [f for f in files if not any(fnmatch.fnmatch(str(f.relative_to(root)), pat) for pat in exclude)]
            images = [f for f in files if _image_suffix(f.name)]
            for f in images:
                found.append((Path(root.name) / f.relative_to(root).with_name(_strip_suffix(f.name)), f))
            others = [f for f in files if f not in images]
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
