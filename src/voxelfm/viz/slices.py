"""CT slice pictures: HU windowing, thumbnails, label-map overlays and PNG encoding.

Display convention (radiological): an axial slice ``array[k]`` is shown as stored — rows run
anterior → posterior (j), columns run patient's right → left (i), so the patient's left is on the
right of the image. Coronal and sagittal slices are flipped so superior is at the top. Pixels are
stretched to the physical aspect ratio when ``spacing`` is given.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

import numpy as np

from voxelfm.core.errors import InputValidationError

Axis = Literal["axial", "coronal", "sagittal"]

#: Standard CT display windows as (level, width) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "soft": (50.0, 350.0),
}

# Distinct, colour-blind-friendly colours (Okabe–Ito first, then tab20-like) for label ids 1..n.
_PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [188, 189, 34],
        [23, 190, 207],
        [255, 152, 150],
        [197, 176, 213],
        [196, 156, 148],
        [219, 219, 141],
    ],
    dtype=np.uint8,
)


def label_palette(n_labels: int) -> np.ndarray:
    """``(n_labels + 1, 3)`` uint8 colours; row 0 (background) is black and never drawn."""
    if n_labels < len(_PALETTE):
        return _PALETTE[: n_labels + 1].copy()
    rng = np.random.default_rng(0)  # fixed: the same label keeps its colour across figures
    extra = rng.integers(40, 256, size=(n_labels + 1 - len(_PALETTE), 3), dtype=np.uint8)
    return np.concatenate([_PALETTE, extra])


def window_hu(hu: np.ndarray, window: str | tuple[float, float] = "lung") -> np.ndarray:
    """Map HU to uint8 grey levels with a (level, width) window or a name from ``WINDOWS``."""
    if isinstance(window, str):
        if window not in WINDOWS:
            raise InputValidationError(f"unknown window {window!r}; choose one of {sorted(WINDOWS)}")
        level, width = WINDOWS[window]
    else:
        level, width = window
    if width <= 0:
        raise InputValidationError(f"window width must be > 0, got {width}")
    lo = level - width / 2.0
    scaled = (np.asarray(hu, dtype=np.float32) - lo) / width
    return (np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def take_slice(volume: np.ndarray, axis: Axis = "axial", index: int | None = None) -> np.ndarray:
    """One 2D slice of a ``(z, y, x[, C])`` array, oriented for display (superior at the top).

    ``index`` defaults to the middle of the axis.
    """
    arr = np.asarray(volume)
    if arr.ndim not in (3, 4):
        raise InputValidationError(f"expected a (z, y, x) or (z, y, x, C) array, got shape {arr.shape}")
    dim = {"axial": 0, "coronal": 1, "sagittal": 2}.get(axis)
    if dim is None:
        raise InputValidationError(f"unknown axis {axis!r}; choose axial, coronal or sagittal")
    n = arr.shape[dim]
    idx = n // 2 if index is None else int(index)
    if not 0 <= idx < n:
        raise InputValidationError(f"slice index {idx} outside 0..{n - 1} along {axis}")
    out = np.take(arr, idx, axis=dim)
    if axis != "axial":
        out = out[::-1]  # rows were k (inferior → superior); show superior at the top
    return out


def slice_pixel_spacing(spacing: Sequence[float], axis: Axis) -> tuple[float, float]:
    """(row, column) spacing in mm of a slice taken with :func:`take_slice`."""
    sz, sy, sx = (float(s) for s in spacing)
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[axis]


def resize_rgb(
    image: np.ndarray, *, height: int | None = None, width: int | None = None,
    pixel_spacing: tuple[float, float] = (1.0, 1.0), nearest: bool = False,
) -> np.ndarray:
    """Resize an (H, W[, 3]) uint8 image to physical aspect ratio and the requested size."""
    from PIL import Image

    img = np.asarray(image)
    h_mm = img.shape[0] * pixel_spacing[0]
    w_mm = img.shape[1] * pixel_spacing[1]
    if height is None and width is None:
        scale = 1.0 / min(pixel_spacing)
        new_h, new_w = round(h_mm * scale), round(w_mm * scale)
    elif width is not None:
        new_w = int(width)
        new_h = max(1, round(new_w * h_mm / w_mm))
    else:
        new_h = int(height)  # type: ignore[arg-type]
        new_w = max(1, round(new_h * w_mm / h_mm))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize((new_w, new_h), resample=resample))


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """Stack a uint8 (H, W) image into (H, W, 3)."""
    return np.repeat(np.asarray(grey, dtype=np.uint8)[..., None], 3, axis=-1)


def overlay_labels(
    grey: np.ndarray, labels: np.ndarray, *, alpha: float = 0.45,
    palette: np.ndarray | None = None, outline: bool = True,
) -> np.ndarray:
    """Blend integer labels (0 = background) over a uint8 grey slice → (H, W, 3) uint8.

    ``outline`` draws each region's boundary at full opacity so small structures stay visible.
    """
    grey = np.asarray(grey)
    labels = np.asarray(labels)
    if grey.shape[:2] != labels.shape:
        raise InputValidationError(
            f"label slice shape {labels.shape} does not match image slice shape {grey.shape[:2]}"
        )
    base = grey_to_rgb(grey) if grey.ndim == 2 else grey.copy()
    lab = labels.astype(np.int64)
    if lab.min(initial=0) < 0:
        raise InputValidationError("label map contains negative ids")
    pal = label_palette(int(lab.max(initial=0))) if palette is None else np.asarray(palette)
    if int(lab.max(initial=0)) >= len(pal):
        raise InputValidationError(f"label id {int(lab.max())} has no colour in a {len(pal)}-colour palette")
    colours = pal[lab].astype(np.float32)
    fg = lab > 0
    out = base.astype(np.float32)
    out[fg] = (1.0 - alpha) * out[fg] + alpha * colours[fg]
    if outline:
        edge = np.zeros_like(fg)
        # A pixel is on the boundary when any 4-neighbour has a different label.
        edge[1:, :] |= lab[1:, :] != lab[:-1, :]
        edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
        edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
        edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
        edge &= fg
        out[edge] = colours[edge]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def blend_rgb(grey: np.ndarray, rgb: np.ndarray, *, alpha: float = 0.6, mask: np.ndarray | None = None) -> np.ndarray:
    """Blend a float (H, W, 3) image in [0, 1] over a uint8 grey slice, only where ``mask`` is true."""
    base = grey_to_rgb(grey).astype(np.float32)
    colour = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0) * 255.0
    if colour.shape != base.shape:
        raise InputValidationError(f"colour map shape {colour.shape} does not match slice shape {base.shape}")
    weight = np.full(base.shape[:2], alpha, dtype=np.float32)
    if mask is not None:
        weight = weight * np.asarray(mask, dtype=np.float32)
    out = (1.0 - weight[..., None]) * base + weight[..., None] * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def ct_thumbnail(
    hu: np.ndarray, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), axis: Axis = "axial",
    index: int | None = None, window: str | tuple[float, float] = "lung", width: int = 160,
) -> np.ndarray:
    """A windowed (H, W, 3) uint8 thumbnail of one slice of a HU volume at physical aspect."""
    grey = window_hu(take_slice(hu, axis, index), window)
    return resize_rgb(grey_to_rgb(grey), width=width, pixel_spacing=slice_pixel_spacing(spacing, axis))


def hstack_images(images: Sequence[np.ndarray], *, gap: int = 4, background: int = 255) -> np.ndarray:
    """Place (H, W, 3) uint8 images side by side, top-aligned, separated by ``gap`` pixels."""
    if not images:
        raise InputValidationError("no images to stack")
    height = max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    canvas = np.full((height, width, 3), background, dtype=np.uint8)
    x = 0
    for im in images:
        canvas[: im.shape[0], x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return canvas


def to_png(image: np.ndarray) -> bytes:
    """Encode an (H, W) or (H, W, 3) uint8 array as PNG bytes."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputValidationError(f"PNG encoding needs uint8 pixels, got {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
