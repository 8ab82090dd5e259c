"""Model directories: ``model.safetensors`` + ``config.json`` + ``preprocess.json`` + ``README.md``.

``model_id`` is the first 16 hex digits of a SHA-256 over every tensor's name, dtype, shape and
bytes, so two directories with the same weights share an id and any change of weights changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from voxelfm import __version__
from voxelfm.core.atomic import atomic_save, atomic_write_text
from voxelfm.core.errors import CheckpointError, ConfigError, located
from voxelfm.models.config import ViTConfig
from voxelfm.models.vit import VisionTransformer3D
from voxelfm.preprocess.spec import PreprocessSpec

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SPEC_FILE = "preprocess.json"
CARD_FILE = "README.md"


def compute_model_id(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Stable 16-hex-digit hash of a state dict's names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: object) -> None:
    """``load_state_dict(strict=True)`` with a CheckpointError listing missing/unexpected/mismatched keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if keys:
                shown = ", ".join(keys[:12]) + (f", … (+{len(keys) - 12} more)" if len(keys) > 12 else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        raise CheckpointError(located(source, "weights do not fit the architecture; " + "; ".join(parts)))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


class _LazyState(Mapping[str, torch.Tensor]):
    """The tensors of an open safetensors file, read one at a time (shapes without reading)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.names = list(handle.keys())

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.handle.get_tensor(name)

    def __iter__(self) -> Any:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _load_safetensors_into(model: torch.nn.Module, path: Path, *, model_id: bool = False) -> str | None:
    """Copy a safetensors file into ``model``'s parameters one tensor at a time (never a second full
    copy of the weights), with :func:`load_state_dict_strict`'s checks; the file's model id if asked."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        state = _LazyState(handle)
        shapes = {k: torch.empty(tuple(handle.get_slice(k).get_shape()), device="meta") for k in state}
        own = model.state_dict()
        missing = sorted(set(own) - set(shapes))
        unexpected = sorted(set(shapes) - set(own))
        mismatched = [k for k in set(own) & set(shapes) if tuple(own[k].shape) != tuple(shapes[k].shape)]
        if missing or unexpected or mismatched:
            load_state_dict_strict(model, shapes, path)  # raises the CheckpointError that lists them
        with torch.no_grad(), open(path, "rb", buffering=0) as raw:
            header_len = int.from_bytes(raw.read(8), "little")  # safe_open has validated the header
            entries = json.loads(raw.read(header_len))
            for name in state:
                _read_into(raw, own[name], entries[name], 8 + header_len)
        return compute_model_id(state) if model_id else None


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def _read_into(raw: Any, target: torch.Tensor, entry: dict[str, Any], base: int) -> None:
    """Read one tensor's bytes with plain reads (no memory map, whose pages would count as a second
    resident copy), straight into ``target`` when the dtypes match, else through a cast."""
    start, end = (int(v) for v in entry["data_offsets"])
    dtype = _SAFETENSORS_DTYPES.get(str(entry["dtype"]))
    if dtype is None:
        raise ValueError(f"unsupported tensor dtype {entry['dtype']}")
    raw.seek(base + start)
    if target.numel() == 0:  # e.g. zero register tokens: nothing to read (and memoryview cannot cast it)
        if end != start:
            raise ValueError(f"tensor of {end - start} bytes for an empty parameter")
        return
    if dtype == target.dtype and target.is_contiguous() and target.device.type == "cpu" and dtype != torch.bfloat16:
        view = memoryview(target.numpy()).cast("B")
        if len(view) != end - start:
            raise ValueError(f"tensor of {end - start} bytes for a parameter of {len(view)}")
        got = raw.readinto(view)
        if got != len(view):
            raise ValueError("file ends inside a tensor")
        return
    data = bytearray(end - start)
    if raw.readinto(data) != len(data):
        raise ValueError("file ends inside a tensor")
    target.copy_(torch.frombuffer(data, dtype=dtype).reshape(target.shape) if data else torch.zeros_like(target))


_CARD_TEMPLATE = """# {title}

{description}

## Model
- Architecture ({backbone}): {architecture}; {n_params:,} parameters.
- model_id: `{model_id}` (SHA-256 of the weights); voxelfm {version}.
- Preprocessing (`preprocess.json`, fingerprint `{fingerprint}`): {preprocessing}.

## Intended use
{intended_use}

## Training data
{training_data}

## Evaluation
{metrics}

## Limitations
{limitations}

## Licence
{licence}

## Source
{source}
"""

_CARD_DEFAULTS = {
    "title": "voxelfm backbone",
    "description": "A 3D CT feature extractor in the VoxelFM style, loadable with `voxelfm.load_model`.",
    "intended_use": "Research use: frozen features of chest/abdominal CT for linear/attentive probes. "
                    "Not a medical device; not for clinical decisions.",
    "training_data": "Not stated.",
    "metrics": "Not evaluated.",
    "limitations": "Features depend on the preprocessing spec shipped with the weights; other "
                   "spacings, HU ranges or patch budgets change the features.",
    "licence": "Not stated.",
    "source": "Not stated.",
}


def describe_spec(spec: Any) -> str:
    """One line describing a preprocessing spec (either kind) for model cards."""
    if isinstance(spec, PreprocessSpec):
        return (f"HU clip [{spec.hu_min}, {spec.hu_max}],\n  background crop {spec.crop_background}, isotropic ≥ "
                f"{spec.min_spacing_mm} mm, ≤ {spec.max_patches} patches,\n  normalisation (x − {spec.norm_mean}) / {spec.norm_std}")
    params = ", ".join(f"{k} {v}" for k, v in spec.params.items())
    return f"the original {spec.recipe} recipe ({params}); see docs/backbones.md"


def render_card(model: Any, spec: Any, model_id: str, card: str | Mapping[str, Any] | None) -> str:
    """Markdown model card: a given string verbatim, or the template filled from a dict of fields."""
    if isinstance(card, str):
        return card
    fields = dict(_CARD_DEFAULTS)
    for key, value in (card or {}).items():
        if key == "metrics" and isinstance(value, Mapping):
            value = "\n".join(f"- {k}: {v}" for k, v in value.items()) or _CARD_DEFAULTS["metrics"]
        fields[key] = str(value)
    return _CARD_TEMPLATE.format(
        **fields, backbone=model.name, architecture=model.describe(), preprocessing=describe_spec(spec),
        n_params=sum(p.numel() for p in model.parameters()), model_id=model_id, version=__version__,
        fingerprint=spec.fingerprint(),
    )


def save_model(model: Any, directory: str | os.PathLike[str], *,
               spec: Any = None, card: str | Mapping[str, Any] | None = None) -> str:
    """Write a model directory for any backbone; returns the model_id (also set on ``model``).

    ``spec`` defaults to ``model.spec`` (or the backbone's default spec) and must suit the
    backbone (``model.check_spec``). ``card`` is a Markdown string or a dict of fields (title,
    description, intended_use, training_data, metrics, limitations, licence, source).
    """
    from safetensors.torch import save_file

    spec = spec if spec is not None else (model.spec or model.default_spec())
    model.check_spec(spec)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    model_id = compute_model_id(state)
    atomic_save(out / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "model_id": model_id}))
    config = {"backbone": model.name, "architecture": model.architecture(), "model_id": model_id,
              "voxelfm_version": __version__}
    atomic_write_text(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    atomic_write_text(out / SPEC_FILE, spec.to_json() + "\n")
    atomic_write_text(out / CARD_FILE, render_card(model, spec, model_id, card))
    model.model_id = model_id
    model.spec = spec
    return model_id


def read_model_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Parsed ``config.json`` of a model directory (CheckpointError naming the file when unusable)."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(located(directory, "model directory not found"))
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(located(path, "missing (not a voxelfm model directory?)")) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(located(path, f"unreadable ({exc})")) from exc
    if not isinstance(data, dict) or not isinstance(data.get("architecture"), dict):
        raise CheckpointError(located(path, "has no 'architecture' mapping"))
    return data


def _file_kind(path: Path) -> str:
    """What a weights file really is, from its first bytes (for the error message)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if head[:2] == b"PK":
        return "a torch.save zip archive"
    if head[:1] == b"\x80":
        return "a Python pickle"
    if len(head) == 8 and int.from_bytes(head, "little") < 100_000_000:
        return "safetensors-like header"
    return "unrecognised format"


def read_weights_file(path: str | os.PathLike[str]) -> Any:
    """Tensors of a ``.safetensors`` file, or of a ``torch.save`` file read with ``weights_only=True``.

    Never unpickles arbitrary objects: a pickle holding anything but tensors and plain containers
    is refused with one line ("not a safetensors/weights-only checkpoint").
    """
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(located(path, "weights file not found"))
    kind = _file_kind(path)
    if path.name.endswith(".safetensors") or kind == "safetensors-like header":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            if path.name.endswith(".safetensors"):
                raise CheckpointError(located(path, f"not a readable safetensors file ({kind}; {exc})")) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError,
            TypeError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CheckpointError(located(path, f"not a safetensors/weights-only checkpoint ({kind}; torch.load(weights_only=True) "
                                      f"refused it: {first[:120]})")) from None


def load_model(directory: str | os.PathLike[str], device: str | torch.device | None = None) -> Any:
    """Load a model directory written by :func:`save_model` (any registered backbone; eval mode, float32)."""
    from safetensors import SafetensorError

    from voxelfm.models.backbones.registry import backbone_class
    from voxelfm.models.backbones.spec import load_spec

    directory = Path(directory)
    data = read_model_config(directory)
    name = str(data.get("backbone", "voxelfm"))  # directories written before the registry are VoxelFM
    try:
        cls = backbone_class(name)
        config_class = ViTConfig if cls is VisionTransformer3D else cls.config_class
        config = config_class.from_dict(data["architecture"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(located(directory / CONFIG_FILE, str(exc))) from exc
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(located(weights, "missing"))
    model = cls(config)
    try:  # straight into the parameters, one tensor at a time: the weights are never held twice
        file_id = _load_safetensors_into(model, weights, model_id=not data.get("model_id"))
    except (SafetensorError, OSError, ValueError) as exc:
        kind = _file_kind(weights)
        if kind in ("a torch.save zip archive", "a Python pickle"):
            raise CheckpointError(located(weights, f"not a readable safetensors file: it is {kind}, not a safetensors/"
                                          "weights-only checkpoint (voxelfm convert-checkpoint reads "
                                          "such files safely)")) from None
        raise CheckpointError(located(weights, f"not a readable safetensors file ({kind}; {exc})")) from exc
    spec_path = directory / SPEC_FILE
    model.spec = load_spec(spec_path) if spec_path.is_file() else model.default_spec()
    try:
        model.check_spec(model.spec)
    except ConfigError as exc:
        raise CheckpointError(located(spec_path, str(exc))) from exc
    model.model_id = str(data.get("model_id") or file_id)
    model.eval()
    if device is not None:
        model.to(device)
    return model
