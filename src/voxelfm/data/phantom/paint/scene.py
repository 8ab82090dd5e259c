"""What every painter reads: the scene (patient, both anatomies, texture fields and the distance
fields shared by several structures), built completely before the first stroke, and the two
painting primitives (fill a shape, find its box).

The scene is frozen and its arrays are read-only, so a painter cannot change what a later painter
sees; painters write only into the canvas and return what they measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxelfm.data.phantom.anatomy import Anatomy
from voxelfm.data.phantom.canvas import Canvas, Slices
from voxelfm.data.phantom.constants import LABEL_IDS, SizePreset
from voxelfm.data.phantom.patient import Patient
from voxelfm.data.phantom.texture import smooth_field

f32 = np.float32
SIDES = ("left", "right")


@dataclass(frozen=True)
class Scene:
    """Everything the renderer knows about a scan besides the canvas arrays."""

    anat: Anatomy
    ref: Anatomy            # same patient at full inspiration: trees and lesions are placed here
    patient: Patient
    preset: SizePreset
    tex: np.ndarray          # fine texture field on the full grid
    lob: np.ndarray          # coarse (lobular-scale) texture field on the full grid
    cav: np.ndarray          # rib-cage cavity SDF on the full grid
    below: np.ndarray        # diaphragm height minus z on the full grid (> 0 below it)
    heart_clear: np.ndarray  # heart SDF grown by 5 mm (large outside its box)
    table_pad_mm: float      # thickness of the pad between the patient and the table

    def to_scan(self, p) -> np.ndarray:
        """Map a point placed in the reference (full-inspiration) anatomy to this scan's anatomy."""
        p = np.array(p, dtype=np.float64)
        ratio = self.anat.lung_height / self.ref.lung_height
        top = self.anat.z_apex
        p[..., 2] = np.where(p[..., 2] < top, top - (top - p[..., 2]) * ratio, p[..., 2])
        return p

    def has(self, finding: str) -> bool:
        return self.patient.findings.get(finding, 0) == 1


def build_scene(cv: Canvas, anat: Anatomy, ref: Anatomy, patient: Patient, preset: SizePreset,
                rng: np.random.Generator) -> Scene:
    """Compute the scene's fields on the canvas grid; ``rng`` is the scan-level stream (texture)."""
    spacing = cv.geometry.spacing
    tex = smooth_field(rng, cv.shape, spacing, preset.texture_scale_mm)
    lob = smooth_field(rng, cv.shape, spacing, preset.texture_scale_mm * 2.5)
    table_pad = 10.0 + 10.0 * rng.random()
    cav = anat.cavity(cv.X, cv.Y, cv.Z)
    # Height above/below the diaphragm, only where it matters (elsewhere far above it).
    below = np.full(cv.shape, -1000.0, dtype=np.float32)
    low = cv.bbox(np.array([-600.0, -600.0, -3000.0]), np.array([600.0, 600.0, anat.z_dome_top + 60.0]))
    if low is not None:
        below[low] = anat.diaphragm_z(cv.X[low], cv.Y[low]) - cv.Z[low]
    heart_clear = np.full(cv.shape, 1000.0, dtype=np.float32)
    hsl = cv.bbox(*box(anat.heart_centre, anat.heart_axes.max() + 8.0))
    if hsl is not None:
        heart_clear[hsl] = anat.heart(*cv.coords(hsl), grow=5.0)
    for field in (tex, lob, cav, below, heart_clear):
        field.setflags(write=False)
    return Scene(anat, ref, patient, preset, tex, lob, cav, below, heart_clear, float(table_pad))


def fill(cv: Canvas, sl: Slices | None, sdf: np.ndarray, value, label: int | None = None,
         weight: np.ndarray | None = None) -> np.ndarray | None:
    """Paint the shape ``sdf < 0`` (partial volume at its edge) inside ``sl``; ``sdf`` is consumed."""
    if sl is None:
        return None
    occ = cv.occupancy(sdf, inplace=True)
    if weight is not None:
        occ *= weight
    cv.paint(sl, occ, value, label)
    return occ


def box(centre, half) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the axis-aligned box ``centre ± half`` (patient frame, mm)."""
    c = np.asarray(centre, dtype=np.float64)
    h = np.broadcast_to(np.asarray(half, dtype=np.float64), (3,))
    return c - h, c + h


def lung_weight(cv: Canvas, sl: Slices) -> np.ndarray:
    """1 where the label map already says lung, else 0: lesions and vessels stay inside the lungs."""
    lab = cv.labels[sl]
    return ((lab == LABEL_IDS["lung_left"]) | (lab == LABEL_IDS["lung_right"])).astype(np.float32)
