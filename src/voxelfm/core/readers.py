"""The one way to read a small JSON or YAML file: a missing, unreadable or malformed file is one
``located`` error line naming the file (never a ``json``/``yaml`` traceback), and YAML is read with
``safe_load`` only (no tags that build Python objects).

    data = read_json(run / "summary.json", what="suite summary")        # DataError when bad
    cfg = read_yaml(path, what="suite file", error=ConfigError)         # any YAML value
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from voxelfm.core.errors import DataError, VoxelFMError, located


def _text(path: Path, what: str, error: type[VoxelFMError]) -> str:
    if not path.is_file():
        raise error(located(path, f"{what} not found"))
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(located(path, f"cannot read {what} ({exc})")) from None


def _need_mapping(data: Any, path: Path, problem: str, error: type[VoxelFMError], mapping: bool) -> Any:
    if mapping and not isinstance(data, dict):
        raise error(located(path, f"{problem}, got {type(data).__name__}"))
    return data


def read_json(path: str | os.PathLike[str], *, what: str = "JSON file", error: type[VoxelFMError] = DataError,
              mapping: bool = True) -> Any:
    """The JSON value in ``path`` (with ``mapping``, it must be an object); errors are ``error``."""
    path = Path(path)
    text = _text(path, what, error)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(located(path, f"invalid JSON (line {exc.lineno}: {exc.msg})")) from None
    return _need_mapping(data, path, "not a JSON object", error, mapping)


def read_yaml(path: str | os.PathLike[str], *, what: str = "YAML file", error: type[VoxelFMError] = DataError,
              mapping: bool = False) -> Any:
    """The YAML value in ``path`` read with ``yaml.safe_load`` (an empty file is ``None``, or ``{}``
    with ``mapping``); errors are ``error`` naming the file and, for bad YAML, the line."""
    import yaml

    path = Path(path)
    text = _text(path, what, error)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(located(path, f"invalid YAML ({where}{problem})")) from None
    if data is None and mapping:
        return {}
    return _need_mapping(data, path, "top level must be a mapping", error, mapping)


__all__ = ["read_json", "read_yaml"]
