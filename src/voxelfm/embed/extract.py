"""``extract_features``: frozen-backbone features of one scan, full 3D or chunked 2.5D."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from voxelfm.core.device import torch_dtype
from voxelfm.core.errors import ConfigError, InputValidationError
from voxelfm.core.types import CTVolume, VoxelFeatures
from voxelfm.embed.slabs import PatchStitcher, plan_slabs
from voxelfm.preprocess.pipeline import PreprocessedVolume

MODES = ("3d", "2.5d")
SLAB_BATCH = 4  # slabs per forward pass in 2.5D (same shape, so they batch)


def resolve_dtype(dtype: Any) -> torch.dtype | None:
    """``None``/"fp32"/float32 → None (plain fp32); "bf16"/"fp16" (or torch's names/dtypes) → that
    autocast dtype. Names as everywhere in voxelfm (:mod:`voxelfm.core.device`)."""
    if dtype is None:
        return None
    chosen = dtype if isinstance(dtype, torch.dtype) else torch_dtype(dtype, key="dtype")
    return None if chosen == torch.float32 else chosen


def resolve_spec(model: torch.nn.Module, spec: Any) -> Any:
    """The spec to use: explicit (object or dict), else the model's own, else the backbone's default.

    Any backbone (see :mod:`voxelfm.models.backbones.base`) checks that the spec can feed it.
    """
    from voxelfm.models.backbones.spec import spec_from_dict

    if spec is None:
        spec = getattr(model, "spec", None) or model.default_spec()  # type: ignore[operator]
    elif isinstance(spec, dict):
        spec = spec_from_dict(spec)
    model.check_spec(spec)  # type: ignore[operator]
    return spec


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _forward(model: Any, x: torch.Tensor, device: torch.device, autocast: torch.dtype | None) -> dict[str, Any]:
    out = model.forward_features(x.to(device), autocast_dtype=autocast)
    return {k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}


def features_from_preprocessed(
    model: Any, pre: PreprocessedVolume, *, mode: str = "3d", device: torch.device | str | None = None,
    dtype: Any = None, slab_thickness: int | None = None, slab_overlap: int | None = None,
) -> VoxelFeatures:
    """Run any backbone on an already prepared volume (the batch runner's entry point).

    The patch grid is returned in the canonical orientation of the scan (z up, y posterior,
    x left; see :func:`~voxelfm.models.backbones.grid.canonical_grid`) whatever the backbone's
    native axis order, with the world position of every patch in ``patch_geometry``.
    """
    from voxelfm.models.backbones.grid import canonical_grid

    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "2.5d" and not getattr(model, "supports_slabs", False):
        raise ConfigError(f"backbone {getattr(model, 'name', '?')!r} takes one fixed-size input: use mode '3d'")
    device = torch.device(device) if device is not None else model_device(model)
    autocast = resolve_dtype(dtype)
    with _eval_mode(model):
        if mode == "3d":
            out = _forward(model, model.input_tensor(pre), device, autocast)
            cls, patch = out["cls"][0], out["patch"][0]
            regs = out["registers"][0] if "registers" in out else np.zeros((0, cls.shape[-1]), np.float32)
            grid = tuple(int(n) for n in patch.shape[:3])
        else:
            p = int(model.patch_size)
            d, h, w = (n // p for n in pre.array.shape)
            if min(d, h, w) < 1:
                raise InputValidationError(f"{pre.geometry.shape}: preprocessed volume is smaller than one patch ({p})")
            plan = plan_slabs(d, slab_thickness, slab_overlap)
            slabs = [pre.array[s * p:(s + plan.thickness) * p] for s in plan.starts]
            cls_list, reg_list = [], []
            stitcher = PatchStitcher(plan)  # slab grids are summed as they come, not all kept
            for i in range(0, len(slabs), SLAB_BATCH):
                x = torch.from_numpy(np.ascontiguousarray(np.stack(slabs[i:i + SLAB_BATCH]), dtype=np.float32))
                out = _forward(model, x, device, autocast)
                cls_list += list(out["cls"])
                reg_list += list(out["registers"])
                for slab_patch in out["patch"]:
                    stitcher.add(slab_patch)
                del out, x
            # Every slab has the same shape (the last one is shifted, not padded), so the plain
            # mean is also the patch-count-weighted mean.
            cls = np.mean(cls_list, axis=0)
            regs = np.mean(reg_list, axis=0)
            patch = stitcher.result()
            grid = (d, h, w)
    patch_geometry = model.patch_geometry(pre.geometry, grid)
    patch, patch_geometry = canonical_grid(np.asarray(patch, dtype=np.float32), patch_geometry)
    return VoxelFeatures(
        cls=np.asarray(cls, dtype=np.float32),
        patch=patch,
        registers=np.asarray(regs, dtype=np.float32),
        patch_geometry=patch_geometry,
        input_geometry=pre.geometry,
        spec=pre.spec,
        model_id=str(getattr(model, "model_id", "unknown")),
        mode=mode,
        spec_fingerprint=pre.spec.fingerprint(),  # once, here; the store keeps it as is
    )


def extract_features(
    model: Any, source: Any, *, spec: Any = None, mode: str = "3d",
    device: torch.device | str | None = None, dtype: Any = None, slab_thickness: int | None = None,
    slab_overlap: int | None = None,
) -> VoxelFeatures:
    """Frozen features of one scan.

    ``source``: a :class:`CTVolume`, a :class:`PreprocessedVolume` (used as is), or anything
    :func:`voxelfm.io.load_ct` reads. Preprocessing follows ``spec`` (default: the model's own).
    ``mode="2.5d"`` runs slabs of ``slab_thickness`` patches along z overlapping by
    ``slab_overlap`` patches (defaults 4 and 1) and stitches them (see docs/extraction.md).
    ``device`` moves the model there (default: where the model is); ``dtype="bf16"`` runs under
    bfloat16 autocast. Outputs are float32 numpy arrays with the world position of every patch.
    """
    if device is not None:
        model.to(device)
    if isinstance(source, PreprocessedVolume):
        pre = source
        resolve_spec(model, pre.spec)
    else:
        spec = resolve_spec(model, spec)
        if not isinstance(source, CTVolume):
            from voxelfm.io import load_ct

            source = load_ct(source)
        pre = model.prepare(source, spec)
    return features_from_preprocessed(model, pre, mode=mode, device=device, dtype=dtype,
                                      slab_thickness=slab_thickness, slab_overlap=slab_overlap)
