"""Cheap fingerprints of CT sources, so a re-run notices when a scan id now means other data.

A file is fingerprinted by its absolute path, size and modification time (nanoseconds); a folder
(a DICOM series) by the same three facts of every file below it, folded into one digest. No file
is read, so fingerprinting a cohort of thousands of scans costs one ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def source_fingerprint(source: str | os.PathLike[str]) -> str | None:
    """A 16-hex-digit digest of ``(path, size, mtime_ns)`` of the file, or of every file under the
    folder; ``None`` when the source cannot be stat'ed (it will fail to read anyway)."""
    path = Path(source).absolute()
    digest = hashlib.sha256(os.fspath(path).encode("utf-8", "surrogateescape"))
    try:
        if path.is_dir():
            entries = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in files:
                    full = Path(root) / name
                    try:
                        st = full.stat()
                    except OSError:
                        continue  # vanished or unreadable: the reader reports it
                    entries.append(f"{full.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}")
            for entry in sorted(entries):
                digest.update(b"\n" + entry.encode("utf-8", "surrogateescape"))
        else:
            st = path.stat()
            digest.update(f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
    except OSError:
        return None
    return digest.hexdigest()[:16]


__all__ = ["source_fingerprint"]
