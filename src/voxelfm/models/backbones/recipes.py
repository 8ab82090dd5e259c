"""The original preprocessing of each comparator model, from a canonical :class:`CTVolume`.

Each recipe returns a :class:`~voxelfm.preprocess.PreprocessedVolume` whose ``array`` is the
exact tensor (without the batch axis) the original pipeline hands to its image encoder, and
whose ``geometry`` maps the tensor's spatial axes to LPS world millimetres (see
:mod:`~voxelfm.models.backbones.grid`). ``hu`` is the same spatial grid in HU. The recipes follow
the originals' own code (order of steps, interpolation, rounding, padding value); where the
original starts from a file layout we do not have (PNG slices, NIfTI voxel order), the
assumption is stated in ``docs/backbones.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxelfm.core.config_check import Rule, check_known_keys, check_tree
from voxelfm.core.errors import ConfigError, InputValidationError, located
from voxelfm.core.types import CTVolume
from voxelfm.models.backbones.grid import axis_map, compose, resize_map
from voxelfm.preprocess.pipeline import PreprocessedVolume

DEFAULTS: dict[str, dict[str, Any]] = {
    # M3D-CLIP (Data/process/m3d_cap_data_prepare.py): min-max to [0, 1], MONAI CropForeground
    # (voxels > 0), MONAI Resize (its default mode "area") to 32 x 256 x 256. No HU window.
    "m3d-clip": {"size": [32, 256, 256], "hu_window": None},
    # CT-CLIP (scripts/data_inference_nii.py): clip HU, trilinear resample to z 1.5 / xy 0.75 mm
    # with floor(n * old/new) voxels, /1000, centre crop/pad to 480 x 480 x 240 with -1.
    "ct-clip": {"hu_min": -1000.0, "hu_max": 1000.0, "spacing_zyx": [1.5, 0.75, 0.75],
                "size_dhw": [240, 480, 480], "scale": 1000.0, "pad_value": -1.0, "layout": "zxy"},
    # Merlin (merlin/data/monai_transforms.py): RAS, Spacing 1.5 x 1.5 x 3 (bilinear), HU
    # [-1000, 1000] -> [0, 1] clipped, symmetric pad (0) then centre crop to 224 x 224 x 160.
    "merlin": {"spacing_xyz": [1.5, 1.5, 3.0], "hu_min": -1000.0, "hu_max": 1000.0,
               "size_xyz": [224, 224, 160], "pad_value": 0.0},
    # RadFM (src/Dataset: resize_image, min-max, stack_images): 512 x 512 in-plane (bilinear),
    # depth zoomed to <= 64 (nearest), per-volume min-max, nearest resize of depth to the
    # closest multiple of 4 in [4, 64], the slice copied to 3 channels.
    "radfm": {"size_hw": [512, 512], "max_depth": 64, "depth_multiple": 4, "channels": 3},
}


#: Ranges and choices of recipe parameters beyond the kinds of their defaults.
PARAM_RULES: dict[str, Rule] = {"layout": Rule(choices=("zxy", "zyx")), "hu_window": Rule(kind="list", items="number")}


def validate_params(recipe: str, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults of ``recipe`` updated with ``params`` (ConfigError on an unknown recipe or key)."""
    if recipe not in DEFAULTS:
        raise ConfigError(f"unknown preprocessing recipe {recipe!r}; known: {', '.join(DEFAULTS)}")
    # Keys and kinds (from the defaults' values) by the shared checker (voxelfm.core.config_check).
    source = f"recipe {recipe!r}"
    check_known_keys(params, DEFAULTS[recipe], what="recipe parameter", source=source)
    check_tree(params, DEFAULTS[recipe], PARAM_RULES, source=source, prefix="params.")
    return {**DEFAULTS[recipe], **params}


# -- shared steps -------------------------------------------------------------------------------
def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _linear_axis(x: torch.Tensor, axis: int, positions: np.ndarray) -> torch.Tensor:
    """Linear interpolation along one axis at continuous ``positions``, clamped to the border."""
    n = x.shape[axis]
    pos = np.clip(positions, 0.0, n - 1.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = torch.from_numpy((pos - lo).astype(np.float32))
    shape = [1] * x.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    a = x.index_select(axis, torch.from_numpy(lo))
    b = x.index_select(axis, torch.from_numpy(hi))
    return a * (1 - w) + b * w


def _crop_pad(x: torch.Tensor, sizes: Sequence[int], value: float, centre: str) -> tuple[torch.Tensor, list[int]]:
    """Crop/pad every axis of ``x`` to ``sizes``; returns the tensor and, per axis, the input index of output 0.

    ``centre="ctclip"``: crop start ``max((n-T)//2, 0)`` then pad ``(T-n')//2`` before;
    ``centre="monai"``: symmetric pad ``(T-n)//2`` before, then crop start ``n//2 - T//2``.
    """
    offsets = []
    for axis, target in enumerate(sizes):
        n = x.shape[axis]
        if centre == "ctclip":
            start = max((n - target) // 2, 0)
            x = x.narrow(axis, start, min(target, n - start))
            before = (target - x.shape[axis]) // 2
            after = target - x.shape[axis] - before
        else:
            before = max(target - n, 0) // 2
            after = max(target - n, 0) - before
        if before or after:
            pad = [0, 0] * x.ndim
            pad[2 * (x.ndim - 1 - axis)] = before
            pad[2 * (x.ndim - 1 - axis) + 1] = after
            x = F.pad(x, pad, value=value)
        if centre == "ctclip":
            offsets.append(start - before)
        else:
            start = x.shape[axis] // 2 - target // 2
            x = x.narrow(axis, start, target)
            offsets.append(start - before)
    return x, offsets


def _constant_error(volume: CTVolume, what: str) -> InputValidationError:
    return InputValidationError(located(volume.source or "volume", f"{what}: the volume is constant"))


# -- recipes ------------------------------------------------------------------------------------
def m3d_clip(volume: CTVolume, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    hu = volume.array.astype(np.float32)
    if p["hu_window"] is not None:
        hu = np.clip(hu, *p["hu_window"])
    lo = float(hu.min())
    x = hu - lo
    top = max(float(x.max()), 1e-8)
    x = x / top
    fg = np.argwhere(x > 0)
    if fg.size == 0:
        raise _constant_error(volume, "M3D foreground crop")
    start, stop = fg.min(axis=0), fg.max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    x = x[box]
    size = [int(s) for s in p["size"]]
    out = F.interpolate(_tensor(x)[None, None], size=size, mode="area")[0]
    index_map = axis_map(start, (1, 1, 1)) @ resize_map(x.shape, size)
    hu_grid = out[0].numpy() * top + lo
    steps = [{"step": "minmax", "min": lo, "range": top},
             {"step": "crop_foreground", "box": [[int(a), int(b)] for a, b in zip(start, stop, strict=True)]},
             {"step": "resize_area", "shape": size}]
    return out.numpy(), index_map, hu_grid, steps


def ct_clip(volume: CTVolume, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    hu = np.clip(volume.array.astype(np.float32), p["hu_min"], p["hu_max"])
    new = [int(n * s / t) for n, s, t in zip(hu.shape, volume.spacing, p["spacing_zyx"], strict=True)]
    if min(new) < 1:
        raise InputValidationError(located(volume.source or "volume", f"too small to resample ({hu.shape})"))
    x = F.interpolate(_tensor(hu)[None, None], size=new, mode="trilinear", align_corners=False)[0, 0]
    x = x / float(p["scale"])
    d, h, w = (int(s) for s in p["size_dhw"])
    # (D, H, W) = (z, x, y) for layout "zxy" (a NIfTI read by nibabel in LPS voxel order) or (z, y, x).
    perm = (0, 2, 1) if p["layout"] == "zxy" else (0, 1, 2)
    sizes_zyx = [d, 0, 0]
    sizes_zyx[perm[1]], sizes_zyx[perm[2]] = h, w
    x, offsets = _crop_pad(x, sizes_zyx, float(p["pad_value"]), "ctclip")
    x = x.permute(*perm)
    index_map = resize_map(hu.shape, new) @ axis_map(offsets, (1, 1, 1)) @ axis_map((0, 0, 0), (1, 1, 1), perm)
    steps = [{"step": "clip_hu", "range": [p["hu_min"], p["hu_max"]]},
             {"step": "resample_trilinear", "shape": new}, {"step": "crop_pad", "offsets": offsets}]
    return x[None].numpy(), index_map, x.numpy() * float(p["scale"]), steps


def merlin(volume: CTVolume, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    nz, ny, nx = volume.array.shape
    # canonical (z, y, x) with x -> left, y -> posterior  ==>  RAS (X -> right, Y -> anterior, Z -> superior)
    ras = _tensor(volume.array.transpose(2, 1, 0)[::-1, ::-1, :].copy())
    to_canonical = axis_map((nx - 1, ny - 1, 0), (-1, -1, 1), (2, 1, 0))
    spacing = volume.spacing[::-1]
    x = ras
    out_shape = []
    for axis, (s, t) in enumerate(zip(spacing, p["spacing_xyz"], strict=True)):
        n = x.shape[axis]
        m = int(np.round((n - 1) * s / t + 1.0))  # MONAI compute_shape_offset: corner voxel centres kept
        x = _linear_axis(x, axis, np.arange(m) * (t / s))
        out_shape.append(m)
    resample = axis_map((0, 0, 0), [t / s for s, t in zip(spacing, p["spacing_xyz"], strict=True)])
    lo, hi = float(p["hu_min"]), float(p["hu_max"])
    x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    x, offsets = _crop_pad(x, [int(s) for s in p["size_xyz"]], float(p["pad_value"]), "monai")
    index_map = to_canonical @ resample @ axis_map(offsets, (1, 1, 1))
    steps = [{"step": "orient", "axcodes": "RAS"}, {"step": "spacing", "shape": out_shape},
             {"step": "scale_intensity", "range": [lo, hi]}, {"step": "pad_crop", "offsets": offsets}]
    return x[None].numpy(), index_map, x.numpy() * (hi - lo) + lo, steps


def radfm(volume: CTVolume, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    hu = _tensor(volume.array)
    nz, ny, nx = hu.shape
    hh, ww = (int(s) for s in p["size_hw"])
    x = F.interpolate(hu[:, None], size=(hh, ww), mode="bilinear", align_corners=False)[:, 0]
    depth_scale = 1.0
    max_depth = int(p["max_depth"])
    if nz > max_depth:  # scipy.ndimage.zoom(order=0): out o samples in o * (n-1)/(N-1), rounded
        pos = np.arange(max_depth) * ((nz - 1) / (max_depth - 1))
        x = x.index_select(0, torch.from_numpy(np.floor(pos + 0.5).astype(np.int64)))
        depth_scale = (nz - 1) / (max_depth - 1)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        raise _constant_error(volume, "RadFM min-max")
    x = (x - lo) / (hi - lo)
    d1 = x.shape[0]
    multiple = int(p["depth_multiple"])
    target = multiple
    for cand in range(multiple, max_depth + 1, multiple):  # closest multiple; ties keep the smaller
        if abs(cand - d1) < abs(target - d1):
            target = cand
    src = np.minimum(np.floor(np.arange(target) * (d1 / target)).astype(np.int64), d1 - 1)
    x = x.index_select(0, torch.from_numpy(src)).permute(1, 2, 0)  # (H, W, D) = (y, x, z)
    step_d = depth_scale * d1 / target
    index_map = axis_map((0.0, 0.0, 0.0), (1, 1, 1), (1, 2, 0)) @ axis_map(
        ((ny / hh - 1) / 2, (nx / ww - 1) / 2, (step_d - depth_scale) / 2), (ny / hh, nx / ww, step_d))
    # nearest depth steps are mapped by their linear (cell-centre) approximation
    steps = [{"step": "resize_inplane", "shape": [hh, ww]}, {"step": "minmax", "range": [lo, hi]},
             {"step": "depth_nearest", "depth": target}]
    hu_grid = x.numpy() * (hi - lo) + lo
    native = x[None].expand(int(p["channels"]), -1, -1, -1).contiguous()
    return native.numpy(), index_map, hu_grid, steps


RECIPES: dict[str, Callable[[CTVolume, dict[str, Any]], tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]]] = {
    "m3d-clip": m3d_clip, "ct-clip": ct_clip, "merlin": merlin, "radfm": radfm,
}


def run_recipe(volume: CTVolume, spec: Any) -> PreprocessedVolume:
    """Apply ``spec`` (a :class:`NativeSpec`) to ``volume``: the native tensor and its geometry."""
    if volume.array.ndim != 3 or min(volume.array.shape) < 1:
        raise InputValidationError(located(volume.source or "volume", f"expected a 3D volume, got shape {volume.array.shape}"))
    array, index_map, hu, steps = RECIPES[spec.recipe](volume, spec.params)
    if not np.isfinite(array).all():
        raise InputValidationError(located(volume.source or "volume", f"{spec.recipe} preprocessing produced non-finite values"))
    geometry = compose(volume.geometry, index_map, array.shape[1:])
    return PreprocessedVolume(array=np.ascontiguousarray(array, dtype=np.float32), geometry=geometry, spec=spec,
                              source_geometry=volume.geometry, hu=np.ascontiguousarray(hu, dtype=np.float32),
                              steps=steps)
