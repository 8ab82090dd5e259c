"""``NativeSpec``: the preprocessing recipe of a comparator backbone, and spec dispatch.

VoxelFM backbones use :class:`~voxelfm.preprocess.PreprocessSpec`. A comparator model (M3D,
CT-CLIP, Merlin, RadFM) is fed by its original pipeline instead; its spec names that recipe and
its parameters. Both kinds serialise to a dict (``to_dict``), have a 12-hex ``fingerprint`` and
are stamped into every stored embedding. A dict with a ``recipe`` key is a NativeSpec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxelfm.core.config_check import check_fields, check_known_keys
from voxelfm.core.errors import ConfigError, located
from voxelfm.preprocess.spec import PreprocessSpec

NATIVE_SPEC_VERSION = 1


@dataclass(frozen=True)
class NativeSpec:
    """Recipe name (see :mod:`voxelfm.models.backbones.recipes`) and its parameters (JSON values)."""

    recipe: str
    params: dict[str, Any] = field(default_factory=dict)
    version: int = NATIVE_SPEC_VERSION

    def __post_init__(self) -> None:
        from voxelfm.models.backbones.recipes import validate_params

        object.__setattr__(self, "params", validate_params(self.recipe, self.params))

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "params": json.loads(json.dumps(self.params)), "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NativeSpec:
        """Keys and types checked by :mod:`voxelfm.core.config_check`; ``params`` by the recipe."""
        check_known_keys(data, ("recipe", "params", "version"), what="NativeSpec key")
        if "recipe" not in data:
            raise ConfigError("a NativeSpec needs a 'recipe'")
        check_fields(cls, data)
        return cls(recipe=data["recipe"], params=dict(data.get("params", {})),
                   version=data.get("version", NATIVE_SPEC_VERSION))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def fingerprint(self) -> str:
        """Short stable hash of the recipe and every parameter (12 hex characters)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def replace(self, **params: Any) -> NativeSpec:
        return NativeSpec(self.recipe, {**self.params, **params}, self.version)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")


AnySpec = PreprocessSpec | NativeSpec


def spec_from_dict(data: dict[str, Any]) -> AnySpec:
    """A NativeSpec when ``data`` names a ``recipe``, else a PreprocessSpec."""
    if not isinstance(data, dict):
        raise ConfigError(f"a preprocess spec must be a mapping, got {type(data).__name__}")
    return NativeSpec.from_dict(data) if "recipe" in data else PreprocessSpec.from_dict(data)


def load_spec(path: str | Path) -> AnySpec:
    """Read a spec JSON (either kind); YAML files are PreprocessSpecs."""
    path = Path(path)
    if path.suffix in {".yaml", ".yml"}:
        return PreprocessSpec.load(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(located(path, f"cannot read preprocess spec ({exc.strerror})")) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(located(path, f"not a valid spec file ({exc})")) from exc
    try:
        return spec_from_dict(data)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(located(path, str(exc))) from exc
