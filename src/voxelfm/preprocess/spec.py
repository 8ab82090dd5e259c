"""PreprocessSpec: every choice that changes the pixels a backbone sees.

It ships with model weights and is stamped into every stored embedding (with its fingerprint),
so nobody has to guess later how an embedding was made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from voxelfm.core.config_check import Rule, check_dataclass, from_mapping
from voxelfm.core.errors import ConfigError, located

SPEC_VERSION = 1


_FINITE = Rule(finite=True)
#: Beyond the type hints: every float must be finite (a spec file may hold anything).
SPEC_RULES: dict[str, Rule] = {key: _FINITE for key in
                               ("hu_min", "hu_max", "background_threshold_hu", "min_spacing_mm", "norm_mean", "norm_std")}


@dataclass(frozen=True)
class PreprocessSpec:
    """Preprocessing parameters; defaults reproduce the original VoxelFM pipeline (fixed).

    Steps in order: HU clip -> background crop -> isotropic resample -> patch budget ->
    centre crop to patch multiples -> normalise ``(x - norm_mean) / norm_std``.
    """

    hu_min: float = -1000.0
    hu_max: float = 1900.0
    crop_background: bool = True
    background_threshold_hu: float = -800.0
    background_kernel: int = 21
    isotropic: bool = True
    min_spacing_mm: float = 0.75
    max_patches: int | None = 25000
    patch_size: int = 14
    norm_mean: float = -573.8
    norm_std: float = 461.3
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        # One line naming the key, the value and the expected type (voxelfm.core.config_check).
        check_dataclass(self, SPEC_RULES, source="invalid PreprocessSpec")
        problems = []
        if not self.hu_min < self.hu_max:
            problems.append(f"hu_min ({self.hu_min}) must be < hu_max ({self.hu_max})")
        if self.background_kernel < 1 or self.background_kernel % 2 == 0:
            problems.append(f"background_kernel must be a positive odd integer, got {self.background_kernel}")
        if self.min_spacing_mm <= 0:
            problems.append(f"min_spacing_mm must be > 0, got {self.min_spacing_mm}")
        if self.max_patches is not None and self.max_patches < 1:
            problems.append(f"max_patches must be >= 1 or None, got {self.max_patches}")
        if self.patch_size < 1:
            problems.append(f"patch_size must be >= 1, got {self.patch_size}")
        if self.norm_std <= 0:
            problems.append(f"norm_std must be > 0, got {self.norm_std}")
        if problems:
            raise ConfigError("invalid PreprocessSpec: " + "; ".join(problems))

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        return from_mapping(cls, data, what="PreprocessSpec key")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ConfigError("PreprocessSpec JSON must be an object")
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_yaml(cls, text: str) -> PreprocessSpec:
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ConfigError("PreprocessSpec YAML must be a mapping")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write as JSON or YAML depending on the suffix."""
        path = Path(path)
        text = self.to_yaml() if path.suffix in {".yaml", ".yml"} else self.to_json() + "\n"
        path.write_text(text)

    @classmethod
    def load(cls, path: str | Path) -> PreprocessSpec:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(located(path, f"cannot read preprocess spec ({exc.strerror})")) from exc
        try:
            return cls.from_yaml(text) if path.suffix in {".yaml", ".yml"} else cls.from_json(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(located(path, f"not a valid spec file ({exc})")) from exc
        except ConfigError as exc:
            raise ConfigError(located(path, str(exc))) from None
        except TypeError as exc:  # e.g. a JSON list instead of a mapping
            raise ConfigError(located(path, f"not a valid spec file ({exc})")) from None

    def fingerprint(self) -> str:
        """Short stable hash of every pixel-relevant field (12 hex characters)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> PreprocessSpec:
        data = self.to_dict()
        data.update(changes)
        return PreprocessSpec.from_dict(data)
