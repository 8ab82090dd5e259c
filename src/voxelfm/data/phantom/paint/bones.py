"""Bones: spine (bodies, discs, posterior elements), ribs with costal cartilage, sternum."""

from __future__ import annotations

import numpy as np

from voxelfm.data.phantom import shapes
from voxelfm.data.phantom.canvas import Canvas, Slices
from voxelfm.data.phantom.constants import HU, LABEL_IDS
from voxelfm.data.phantom.paint.scene import Scene, f32, fill


def _bone(cv: Canvas, sl: Slices, sdf: np.ndarray, label: int, trabecular: float, cortex_mm: float = 1.6) -> None:
    fill(cv, sl, sdf.copy(), HU.CORTICAL_BONE * 0.9, label)
    fill(cv, sl, sdf + f32(cortex_mm), f32(trabecular))


def trabecular_hu(age: float) -> float:
    """Trabecular bone density falls with age (osteopenia)."""
    return float(np.clip(270.0 - 2.4 * (age - 35.0), 110.0, 280.0))


def paint_spine(cv: Canvas, sc: Scene) -> None:
    anat = sc.anat
    r = anat.vert_radius
    lo = np.array([-45.0, anat.y_spine - r - 4, anat.z_lowest_lung - 120])
    hi = np.array([45.0, anat.back_y, anat.z_apex + 150])
    sl = cv.bbox(lo, hi)
    if sl is None:
        return
    x, y, z = cv.coords(sl)
    period = f32(27.0 * sc.patient.height_cm / 170.0)
    zz = np.mod(z - f32(anat.z_apex), period)
    slab = np.maximum(f32(2.5) - zz, zz - (period - f32(2.5)))  # 5 mm discs between bodies
    body_ell = shapes.ellipse_xy(x, y, (0.0, anat.y_spine), (r * 1.15, r))
    fill(cv, sl, body_ell.copy(), f32(85.0))  # discs (then overdrawn by the bodies)
    body = np.maximum(body_ell, slab)
    y_canal = anat.y_spine + r + 8.0
    arch = np.maximum(shapes.ellipse_xy(x, y, (0.0, y_canal), (14.0, 13.0)),
                      -shapes.ellipse_xy(x, y, (0.0, y_canal), (8.0, 7.5)))
    zz2 = np.mod(z - f32(anat.z_apex + 8.0), period)
    slab2 = np.maximum(f32(4.0) - zz2, zz2 - (period - f32(6.0)))
    spinous = np.maximum(np.abs(x) - f32(4.5), np.maximum(y - f32(y_canal + 28.0), f32(y_canal + 8.0) - y))
    # transverse processes point posterolaterally
    transverse = np.maximum(np.abs(y - f32(y_canal - 4.0) - f32(0.45) * np.abs(x)) - f32(4.5), np.abs(x) - f32(28.0))
    posterior = np.maximum(np.minimum(np.minimum(arch, spinous), transverse), slab2)
    fill(cv, sl, shapes.ellipse_xy(x, y, (0.0, y_canal), (8.0, 7.5)), f32(25.0))  # canal / cord
    _bone(cv, sl, np.minimum(body, posterior), LABEL_IDS["vertebrae"], trabecular_hu(sc.patient.age))


def paint_ribs(cv: Canvas, sc: Scene) -> None:
    """Twelve rib pairs sloping down anteriorly, with costal cartilage to the sternum."""
    anat = sc.anat
    tb = trabecular_hu(sc.patient.age) - 20
    step = anat.lung_height * 0.082 + 3.0
    cart_hu = 110.0 + 6.0 * max(sc.patient.age - 45, 0)  # costal cartilage calcifies with age
    for sgn in (-1.0, 1.0):
        bone: list[tuple[np.ndarray, np.ndarray, float]] = []
        cartilage: list[tuple[np.ndarray, np.ndarray]] = []
        for k in range(12):
            z0 = anat.z_apex - 4.0 - k * step
            end = 0.86 if k < 7 else (0.7 if k < 10 else 0.45)
            thetas = np.linspace(0.10, end, 9) * np.pi
            zs = z0 - (62.0 + 3.0 * k) * (thetas / np.pi) ** 1.3  # ribs slope down anteriorly
            t = np.clip((zs - (anat.z_apex - 70.0)) / 90.0, 0, 1) ** 2
            a = anat.a_c * (1 - 0.3 * t) + 5.0
            b = anat.b_c * (1 - 0.12 * t) + 5.0
            pts = np.stack([sgn * a * np.sin(thetas), anat.y_c + b * np.cos(thetas), zs], axis=1)
            bone.append((pts[:-1], pts[1:], 5.0 if k else 4.0))
            if k < 10:  # costal cartilage toward the sternum (ribs 8-10 join the rib above)
                tip = pts[-1]
                target = np.array([sgn * 16.0, anat.y_c - anat.b_c - 6.0, min(tip[2] + 15.0, anat.z_apex - 45.0)])
                if k >= 7:
                    target = tip + np.array([-sgn * 30.0, -12.0, 25.0])
                cartilage.append((tip, target))
        starts = np.vstack([b[0] for b in bone])
        ends = np.vstack([b[1] for b in bone])
        radii = np.concatenate([np.full(len(b[0]), b[2]) for b in bone])
        res = shapes.segments(cv, starts, ends, radii, radii)
        if res is not None:
            _bone(cv, res[0], res[1], LABEL_IDS["ribs"], tb, cortex_mm=1.5)
        c_starts = np.array([c[0] for c in cartilage])
        c_ends = np.array([c[1] for c in cartilage])
        res = shapes.segments(cv, c_starts, c_ends, np.full(len(c_starts), 4.5), np.full(len(c_starts), 4.0))
        if res is not None:
            fill(cv, res[0], res[1], f32(cart_hu))


def paint_sternum(cv: Canvas, sc: Scene) -> None:
    anat = sc.anat
    y_st = anat.y_c - anat.b_c - 7.0
    top, bottom = anat.z_apex - 40.0, anat.z_dome_top + 10.0
    sl = cv.bbox(np.array([-30.0, y_st - 9, bottom - 5]), np.array([30.0, y_st + 9, top + 5]))
    if sl is None:
        return
    x, y, z = cv.coords(sl)
    half_w = f32(14.0) + f32(10.0) * np.clip((z - f32(top - 40.0)) / f32(40.0), 0.0, 1.0)  # manubrium wider
    d = np.maximum(np.maximum(np.abs(x) - half_w, np.abs(y - f32(y_st)) - f32(6.0)),
                   np.maximum(z - f32(top), f32(bottom) - z))
    _bone(cv, sl, d, LABEL_IDS["sternum"], trabecular_hu(sc.patient.age) - 30, cortex_mm=1.5)
