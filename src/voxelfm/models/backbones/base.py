"""The backbone interface that every network in voxelfm implements, and its shared plumbing.

A backbone is a ``torch.nn.Module`` with:

* ``name`` (registry key), ``config`` (a dataclass with ``to_dict``), ``embed_dim``, ``spec``
  (its preprocessing: :class:`~voxelfm.preprocess.PreprocessSpec` or
  :class:`~voxelfm.models.backbones.spec.NativeSpec`), ``model_id``, ``supports_slabs``;
* ``prepare(volume, spec=None) -> PreprocessedVolume``: the native tensor (``array``, no batch
  axis) with the geometry of its spatial axes;
* ``prepare_input(volume) -> Tensor``: that tensor with a batch axis — exactly what the original
  pipeline hands to its image encoder;
* ``input_tensor(pre) -> Tensor``: batch of one from a ``PreprocessedVolume``;
* ``forward_features(x, autocast_dtype=None) -> {"cls": (B, C), "patch": (B, d, h, w, C), "grid", ...}``
  (float32, inference mode; extra keys are backbone-specific vectors);
* ``patch_geometry(input_geometry, grid) -> Geometry``: world position of every patch of ``patch``;
* ``check_spec(spec)``: ConfigError when a spec cannot feed this network;
* ``describe() -> str``: one line for model cards and ``voxelfm model info``.

:class:`NativeBackbone` implements the parts common to the comparator networks.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import asdict, replace
from typing import Any, ClassVar

import torch
from torch import nn

from voxelfm.core.config_check import from_mapping, yaml_value
from voxelfm.core.errors import ConfigError, InputValidationError
from voxelfm.core.geometry import Geometry
from voxelfm.core.types import CTVolume
from voxelfm.models.backbones.spec import NativeSpec
from voxelfm.preprocess.pipeline import PreprocessedVolume


class ConfigMixin:
    """``to_dict``/``from_dict``/``with_overrides`` for the frozen config dataclasses of the backbones."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: object = None) -> Any:
        """The config of ``data``: unknown keys and values of the wrong type are one ConfigError line
        naming the key (:mod:`voxelfm.core.config_check`); JSON lists become tuples."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()} if isinstance(data, dict) else data
        return from_mapping(cls, values, what=f"{cls.__name__} key", source=source, check_types=True)

    def with_overrides(self, overrides: dict[str, Any]) -> Any:
        """A copy with ``overrides`` applied; string values are parsed as YAML (``--set``; ``5e-4`` is a number)."""
        parsed = {k: (yaml_value(v) if isinstance(v, str) else v) for k, v in overrides.items()}
        return type(self).from_dict({**self.to_dict(), **parsed})

    def replace(self, **changes: Any) -> Any:
        return replace(self, **changes)  # type: ignore[type-var]


def _autocast(x: torch.Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, dtype=dtype)


class NativeBackbone(nn.Module, metaclass=abc.ABCMeta):
    """Base of the comparator networks: native spec, preparation, inference wrapper.

    A network implements the four abstract members: ``embed_dim``, ``features``,
    ``patch_geometry`` and ``expected_input``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    supports_slabs: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.spec: Any = NativeSpec(self.name)
        self.model_id: str = "untrained"

    # -- the interface --------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def embed_dim(self) -> int:
        """Width of ``cls``."""

    def default_spec(self) -> NativeSpec:
        return NativeSpec(self.name)

    def check_spec(self, spec: Any) -> None:
        if not isinstance(spec, NativeSpec) or spec.recipe != self.name:
            got = spec.recipe if isinstance(spec, NativeSpec) else "the VoxelFM PreprocessSpec"
            raise ConfigError(f"backbone {self.name!r} needs its own preprocessing recipe {self.name!r}, got {got}")

    def prepare(self, volume: CTVolume, spec: NativeSpec | None = None) -> PreprocessedVolume:
        from voxelfm.models.backbones.recipes import run_recipe

        spec = spec if spec is not None else self.spec
        self.check_spec(spec)
        return run_recipe(volume, spec)

    def prepare_input(self, volume: CTVolume) -> torch.Tensor:
        return self.input_tensor(self.prepare(volume))

    def input_tensor(self, pre: PreprocessedVolume) -> torch.Tensor:
        return torch.from_numpy(pre.array)[None]

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cls`` (B, C), ``patch`` (B, d, h, w, C) and extras, in the network's own dtype."""

    @abc.abstractmethod
    def patch_geometry(self, input_geometry: Geometry, grid: tuple[int, int, int]) -> Geometry:
        """World geometry of the patch grid, given the native input's geometry."""

    def describe(self) -> str:
        return f"{type(self).__name__} {self.config.to_dict()}"

    def architecture(self) -> dict[str, Any]:
        return self.config.to_dict()

    @torch.inference_mode()
    def forward_features(self, x: torch.Tensor, *, autocast_dtype: torch.dtype | None = None) -> dict[str, Any]:
        """Inference on a native batch; float32 outputs plus ``grid`` (d, h, w) of ``patch``."""
        self.check_input(x)
        with _autocast(x, autocast_dtype):
            out = self.features(x)
        result: dict[str, Any] = {k: v.float() for k, v in out.items()}
        result["grid"] = tuple(int(n) for n in out["patch"].shape[1:4])
        return result

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input(x)
        return self.features(x)

    @abc.abstractmethod
    def expected_input(self) -> tuple[int | None, ...]:
        """Expected ``(C, *spatial)`` of one input; ``None`` where any size fits (checked in check_input)."""

    def check_input(self, x: torch.Tensor) -> None:
        expected = self.expected_input()
        shape = tuple(x.shape[1:])
        if x.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, shape, strict=True)):
            want = ", ".join("*" if e is None else str(e) for e in expected)
            raise InputValidationError(f"{self.name} expects input (B, {want}), got {tuple(x.shape)}")


def keys_under(state: dict[str, Any], marker: str, roots: tuple[str, ...]) -> dict[str, Any]:
    """The entries of a released state dict that belong to one encoder, renamed to its own keys.

    When any key contains ``marker`` (the encoder's attribute inside the whole released model,
    e.g. ``"vision_encoder."``), only those keys are kept, with everything up to the marker cut
    off; otherwise the file is taken as the bare encoder. Keys not starting with ``roots`` are dropped.
    """
    prefixed = any(marker in key for key in state)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if prefixed and marker not in key:
            continue
        name = key.split(marker, 1)[1] if prefixed else key
        if name.startswith(roots):
            out[name] = value
    return out

