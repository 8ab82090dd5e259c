"""How a scan is acquired: field of view, spacing, slice thickness, pose, kernel and noise.

The scanner model is deliberately simple but covers what preprocessing must cope with: an axial
grid whose in-plane spacing follows the reconstruction field of view (FOV / matrix), slice
thickness = increment, a point-spread function (Gaussian, wider for the smooth kernel, with edge
enhancement for the sharp kernel), a slice-sensitivity profile along z, and correlated quantum
noise whose level grows with patient size and with the sharp kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxelfm.core.geometry import Geometry
from voxelfm.data.phantom.anatomy import Anatomy
from voxelfm.data.phantom.canvas import Pose, rotation_matrix
from voxelfm.data.phantom.constants import SizePreset
from voxelfm.data.phantom.texture import blur, blur_axis, gaussian_kernel


@dataclass
class Acquisition:
    """Scan-level acquisition and positioning parameters."""

    matrix: int
    fov_mm: float
    thickness_mm: float
    kernel: str          # "smooth" | "sharp"
    noise_sd: float      # HU, white-noise equivalent before kernel shaping
    inspiration: float
    roll_deg: float
    pitch_deg: float
    yaw_deg: float
    table_z_mm: float
    centre_offset_mm: tuple[float, float]
    top_margin_mm: float
    bottom_margin_mm: float
    kvp: int
    mas: float

    @property
    def spacing_xy(self) -> float:
        return self.fov_mm / self.matrix


def sample_acquisition(rng: np.random.Generator, preset: SizePreset) -> Acquisition:
    """Draw acquisition and posture parameters for one scan."""
    kernel = str(rng.choice(["smooth", "sharp"], p=[0.6, 0.4]))
    mas = float(rng.uniform(40, 250))
    return Acquisition(
        matrix=int(rng.choice(preset.matrix)),
        fov_mm=0.0,  # set from the body size in plan_geometry
        thickness_mm=float(rng.choice(preset.thickness_mm)),
        kernel=kernel,
        noise_sd=float(22.0 * np.sqrt(100.0 / mas)),
        inspiration=float(np.clip(rng.normal(0.95, 0.06), 0.78, 1.05)),
        roll_deg=float(rng.normal(0, 2.5)),
        pitch_deg=float(rng.normal(0, 1.5)),
        yaw_deg=float(rng.normal(0, 1.2)),
        table_z_mm=float(rng.uniform(-650, -150)),
        centre_offset_mm=(float(rng.normal(0, 8)), float(rng.normal(0, 10))),
        top_margin_mm=float(rng.uniform(0, 20)),
        bottom_margin_mm=float(rng.uniform(0, 30)),
        kvp=int(rng.choice([100, 120, 120, 140])),
        mas=round(mas, 1),
    )


def plan_geometry(acq: Acquisition, anat: Anatomy, rng: np.random.Generator) -> tuple[Geometry, Pose]:
    """Place the patient on the table and choose the reconstruction grid around it."""
    rot = rotation_matrix(acq.roll_deg, acq.pitch_deg, acq.yaw_deg)
    pose = Pose(rotation=rot, translation=np.array([rng.normal(0, 6), rng.uniform(-40, 0), acq.table_z_mm]))
    half_w = anat.a_c + anat.muscle_lat + anat.fat
    # FOV: the body plus a margin, sometimes truncating large patients as real scans do.
    acq.fov_mm = float(np.clip(2 * half_w + rng.uniform(10, 70), 300.0, 480.0))
    spacing = acq.fov_mm / acq.matrix
    body_centre = pose.to_world([0.0, anat.muscle_centre_y, 0.0])
    cx = body_centre[0] + acq.centre_offset_mm[0]
    cy = body_centre[1] + acq.centre_offset_mm[1] + 10.0  # include part of the table
    z_top = anat.z_apex + acq.top_margin_mm + pose.translation[2]
    z_bot = anat.z_lowest_lung - acq.bottom_margin_mm + pose.translation[2]
    n_z = int(np.ceil((z_top - z_bot) / acq.thickness_mm)) + 1
    origin = (cx - acq.fov_mm / 2 + spacing / 2, cy - acq.fov_mm / 2 + spacing / 2, z_bot)
    geometry = Geometry(shape=(n_z, acq.matrix, acq.matrix), spacing=(acq.thickness_mm, spacing, spacing),
                        origin=origin)
    return geometry, pose


def _noise_gain(sigmas_px: tuple[float, ...]) -> float:
    """Standard deviation of white noise after the separable Gaussian blur ``sigmas_px``."""
    gain = 1.0
    for s in sigmas_px:
        if s >= 0.05:
            gain *= float(np.sqrt((gaussian_kernel(s).astype(np.float64) ** 2).sum()))
    return gain


def apply_scanner(hu: np.ndarray, geometry: Geometry, acq: Acquisition, anat: Anatomy,
                  rng: np.random.Generator) -> np.ndarray:
    """Quantum noise, kernel PSF and slice profile, edge enhancement (sharp kernel), clip, round.

    Noise is added before the PSF so the kernel shapes its texture as it does on a scanner
    (smooth kernel: blotchy low-frequency noise; sharp kernel: fine grain plus edge overshoot).
    """
    sz, sy, _ = geometry.spacing
    psf_mm = 0.85 if acq.kernel == "smooth" else 0.45
    sigmas = (0.38, max(psf_mm / sy, 0.3), max(psf_mm / sy, 0.3))
    # Larger patients attenuate more; noise falls with voxel size; sharp kernels pass more.
    size_factor = ((anat.a_c + anat.fat) / 140.0) ** 1.5
    voxel_factor = (1.5 / sy) ** 0.75 * (2.5 / sz) ** 0.5
    sd = acq.noise_sd * size_factor * voxel_factor * (2.2 if acq.kernel == "sharp" else 1.0)
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise *= np.float32(sd / _noise_gain(sigmas))
    hu += noise
    out = blur(hu, sigmas)
    if acq.kernel == "sharp":
        # Unsharp masking: a sharp reconstruction kernel overshoots at edges.
        low = blur_axis(blur_axis(out, 1.0, 1), 1.0, 2)
        low -= out
        low *= -0.6
        out += low
    np.clip(out, -1024.0, 3071.0, out=out)
    np.rint(out, out=out)
    return out
