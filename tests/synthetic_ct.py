"""Synthetic CT for tests: one body phantom (HU array or CTVolume with known geometry) and one smooth
model-input tensor. The test folders' helpers (``io/conftest.py``, ``embed/conftest.py``,
``ssl/synthetic.py``, ``models/vit_helpers.py``) build on these instead of keeping their own makers.

``tests/`` is put on ``sys.path`` by ``tests/conftest.py``, so any test module can
``from synthetic_ct import body_hu, ct_volume``.
"""

from __future__ import annotations

import numpy as np

from voxelfm.core import CTVolume, Geometry


def body_hu(shape: tuple[int, int, int] = (6, 10, 12), seed: int | np.random.Generator = 0, *,
            noise_hu: float = 8.0, blobs: bool = False) -> np.ndarray:
    """A chest-like HU array (z, y, x), float32 holding whole numbers >= -1024.

    Air around an elliptic trunk (40 HU) with a posterior spine (700 HU) and two lungs (-850 HU,
    ellipsoids, so slices differ along z), a slow z ramp inside the trunk (no two slices alike),
    Gaussian noise of ``noise_hu``, and with ``blobs`` one to three dense spheres (200-1200 HU) at
    random places (volumes drawn from one generator differ in content). Whole numbers >= -1024 are
    stored exactly by DICOM (uint16 with intercept -1024, or int16) and int16 NIfTI, so round trips
    can compare voxels exactly. ``seed`` may be a generator (several volumes from one stream).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    trunk = (y / 0.8) ** 2 + (x / 0.9) ** 2 < 1
    hu = np.full(shape, -1000.0)
    hu[trunk] = 40.0
    for side in (-0.4, 0.4):
        hu[(z / 0.75) ** 2 + ((y + 0.1) / 0.45) ** 2 + ((x - side) / 0.28) ** 2 < 1] = -850.0
    hu[((y - 0.55) / 0.15) ** 2 + (x / 0.15) ** 2 < 1] = 700.0
    if blobs:
        for _ in range(int(rng.integers(1, 4))):
            c = rng.uniform(-0.5, 0.5, 3)
            r = rng.uniform(0.08, 0.2)
            hu[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r**2] = rng.uniform(200, 1200)
    hu += 20.0 * z * trunk + rng.normal(0, noise_hu, shape)
    return np.maximum(np.round(hu), -1024.0).astype(np.float32)


def ct_volume(shape: tuple[int, int, int] = (6, 10, 12), spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
              origin: tuple[float, float, float] = (-40.0, -30.0, 100.0), direction: np.ndarray | None = None,
              seed: int | np.random.Generator = 0, *, noise_hu: float = 8.0, source: str | None = None) -> CTVolume:
    """:func:`body_hu` as a :class:`CTVolume` on the given LPS grid."""
    geometry = Geometry(shape=shape, spacing=spacing, origin=origin,
                        direction=np.eye(3) if direction is None else direction)
    return CTVolume(array=body_hu(shape, seed, noise_hu=noise_hu), geometry=geometry, source=source)


def smooth_volume(shape: tuple[int, int, int], batch: int = 1, seed: int = 0):
    """A deterministic (B, D, H, W) torch input with structure at several scales plus noise (model
    tests; its values are pinned by golden outputs, so it stays exactly as it is)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij")
    base = torch.sin(3 * axes[0]) + torch.cos(2 * axes[1] + axes[2]) + axes[0] * axes[2]
    return base.expand(batch, *shape) + 0.3 * torch.randn(batch, *shape, generator=gen)
