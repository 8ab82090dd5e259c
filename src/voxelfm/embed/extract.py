"""``extract_features``: frozen-backbone features of one scan, full 3D or chunked 2.5D."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from voxelfm.core.errors import ConfigError, InputValidationError
from voxelfm.core.types import CTVolume, VoxelFeatures
from voxelfm.embed.slabs import plan_slabs, stitch_patches
from voxelfm.preprocess.pipeline import PreprocessedVolume, preprocess
from voxelfm.preprocess.spec import PreprocessSpec

MODES = ("3d", "2.5d")
SLAB_BATCH = 4  # slabs per forward pass in 2.5D (same shape, so they batch)


def resolve_dtype(dtype: Any) -> torch.dtype | None:
    """``None``/"fp32"/float32 → None (plain fp32); "bf16"/"bfloat16"/torch.bfloat16 → bfloat16 autocast."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    else:
        names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
        if str(dtype).lower() not in names:
            raise ConfigError(f"unknown dtype {dtype!r}; use fp32, bf16 or fp16")
        chosen = names[str(dtype).lower()]
    return None if chosen == torch.float32 else chosen


def resolve_spec(model: torch.nn.Module, spec: PreprocessSpec | dict[str, Any] | None) -> PreprocessSpec:
    """The spec to use: explicit, else the model's own, else the default with the model's patch size."""
    patch = int(model.config.patch_size)
    if spec is None:
        spec = getattr(model, "spec", None) or PreprocessSpec(patch_size=patch)
    elif isinstance(spec, dict):
        spec = PreprocessSpec.from_dict(spec)
    if spec.patch_size != patch:
        raise ConfigError(f"preprocess spec patch_size {spec.patch_size} does not match the model's patch size {patch}")
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


def _forward(model: Any, array: np.ndarray, device: torch.device, autocast: torch.dtype | None) -> dict[str, Any]:
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)
    out = model.forward_features(x, autocast_dtype=autocast)
    return {k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}


def features_from_preprocessed(
    model: Any, pre: PreprocessedVolume, *, mode: str = "3d", device: torch.device | str | None = None,
    dtype: Any = None, slab_thickness: int | None = None, slab_overlap: int | None = None,
) -> VoxelFeatures:
    """Run the backbone on an already preprocessed volume (the batch runner's entry point)."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device) if device is not None else model_device(model)
    autocast = resolve_dtype(dtype)
    p = int(model.config.patch_size)
    d, h, w = (n // p for n in pre.array.shape)
    if min(d, h, w) < 1:
        raise InputValidationError(f"{pre.geometry.shape}: preprocessed volume is smaller than one patch ({p})")
    with _eval_mode(model):
        if mode == "3d":
            out = _forward(model, pre.array[None], device, autocast)
            cls, regs, patch = out["cls"][0], out["registers"][0], out["patch"][0]
        else:
            plan = plan_slabs(d, slab_thickness, slab_overlap)
            slabs = [pre.array[s * p:(s + plan.thickness) * p] for s in plan.starts]
            cls_list, reg_list, patch_list = [], [], []
            for i in range(0, len(slabs), SLAB_BATCH):
                out = _forward(model, np.stack(slabs[i:i + SLAB_BATCH]), device, autocast)
                cls_list += list(out["cls"])
                reg_list += list(out["registers"])
                patch_list += list(out["patch"])
            # Every slab has the same shape (the last one is shifted, not padded), so the plain
            # mean is also the patch-count-weighted mean.
            cls = np.mean(cls_list, axis=0)
            regs = np.mean(reg_list, axis=0)
            patch = stitch_patches(plan, patch_list)
    start = ((p - 1) / 2.0,) * 3
    return VoxelFeatures(
        cls=np.asarray(cls, dtype=np.float32),
        patch=np.asarray(patch, dtype=np.float32),
        registers=np.asarray(regs, dtype=np.float32),
        patch_geometry=pre.geometry.subgrid(start, (p, p, p), (d, h, w)),
        input_geometry=pre.geometry,
        spec=pre.spec.to_dict(),
        model_id=str(getattr(model, "model_id", "unknown")),
        mode=mode,
    )


def extract_features(
    model: Any, source: Any, *, spec: PreprocessSpec | dict[str, Any] | None = None, mode: str = "3d",
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
        pre = preprocess(source, spec)
    return features_from_preprocessed(model, pre, mode=mode, device=device, dtype=dtype,
                                      slab_thickness=slab_thickness, slab_overlap=slab_overlap)
