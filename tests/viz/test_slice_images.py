"""Slices, windowing, overlays and PNG encoding of voxelfm.viz.slices."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from voxelfm.core.errors import InputValidationError
from voxelfm.viz.slices import (
    ct_thumbnail,
    hstack_images,
    overlay_labels,
    slice_pixel_spacing,
    take_slice,
    to_png,
    window_hu,
)


def test_window_maps_level_to_mid_grey_and_clips() -> None:
    hu = np.array([-2000.0, -600.0, 5000.0, np.nan], dtype=np.float32)
    out = window_hu(hu, "lung")  # level -600, width 1500
    assert out.dtype == np.uint8
    assert out[0] == 0 and out[2] == 255 and out[3] == 0
    assert abs(int(out[1]) - 128) <= 1
    with pytest.raises(InputValidationError, match="unknown window"):
        window_hu(hu, "brain")


def test_take_slice_orientation() -> None:
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    assert np.array_equal(take_slice(vol, "axial", 2), vol[2])
    cor = take_slice(vol, "coronal", 1)
    # Superior (largest k) must be the top row.
    assert np.array_equal(cor[0], vol[3, 1, :]) and np.array_equal(cor[-1], vol[0, 1, :])
    assert take_slice(vol, "sagittal").shape == (4, 5)
    with pytest.raises(InputValidationError, match="outside"):
        take_slice(vol, "axial", 9)
    assert slice_pixel_spacing((3.0, 0.7, 0.8), "coronal") == (3.0, 0.8)


def test_thumbnail_has_physical_aspect() -> None:
    hu = np.zeros((10, 40, 40), dtype=np.float32)
    thumb = ct_thumbnail(hu, spacing=(5.0, 1.0, 1.0), axis="coronal", width=80)
    # 10 slices x 5 mm = 50 mm tall, 40 mm wide -> 100 x 80 pixels.
    assert thumb.shape == (100, 80, 3)


def test_overlay_colours_labels_and_keeps_background() -> None:
    grey = np.full((8, 8), 100, dtype=np.uint8)
    labels = np.zeros((8, 8), dtype=np.int16)
    labels[2:6, 2:6] = 1
    out = overlay_labels(grey, labels, alpha=0.5, outline=False)
    assert np.array_equal(out[0, 0], [100, 100, 100])
    assert not np.array_equal(out[3, 3], [100, 100, 100])
    outlined = overlay_labels(grey, labels, alpha=0.5, outline=True)
    assert not np.array_equal(outlined[2, 2], out[2, 2])  # boundary drawn at full colour
    assert np.array_equal(outlined[3, 3], out[3, 3])  # interior unchanged
    with pytest.raises(InputValidationError, match="does not match"):
        overlay_labels(grey, labels[:4])


def test_png_roundtrip_and_stacking() -> None:
    a = np.zeros((10, 20, 3), dtype=np.uint8)
    b = np.full((6, 5, 3), 255, dtype=np.uint8)
    stacked = hstack_images([a, b], gap=3)
    assert stacked.shape == (10, 28, 3)
    png = to_png(stacked)
    back = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(back, stacked)
    with pytest.raises(InputValidationError, match="uint8"):
        to_png(stacked.astype(np.float32))
