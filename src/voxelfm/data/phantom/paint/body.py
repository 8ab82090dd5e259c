"""Body wall, breasts, mediastinal fat and upper abdomen (liver, spleen, stomach), and the table."""

from __future__ import annotations

import numpy as np

from voxelfm.data.phantom import shapes
from voxelfm.data.phantom.canvas import Canvas, Slices
from voxelfm.data.phantom.constants import HU, LABEL_IDS
from voxelfm.data.phantom.paint.scene import Scene, box, f32, fill


def paint_table(cv: Canvas, sc: Scene) -> None:
    """Curved carbon-fibre table with foam core and a thin pad, fixed in the world frame."""
    anat = sc.anat
    wx, wy, _ = cv.world_axes  # relative to the pose translation
    back = cv.pose.rotation @ np.array([0.0, anat.back_y, 0.0])
    pad = sc.table_pad_mm
    top = back[1] + pad
    x2 = wx[None, :]
    y2 = wy[:, None]
    surface = f32(top) + f32(0.0012) * x2 * x2
    half_w = f32(215.0)
    for y0, y1, value in ((surface - f32(pad), surface, HU.MATTRESS), (surface, surface + f32(42.0), HU.TABLE_SKIN),
                          (surface + f32(2.5), surface + f32(39.5), HU.TABLE_FOAM)):
        sdf = np.maximum(np.maximum(y0 - y2, y2 - y1), np.abs(x2) - half_w)
        occ = cv.occupancy(sdf, inplace=True)
        rows = np.nonzero(occ.max(axis=1) > 0)[0]
        if len(rows) == 0:
            continue
        sl = (slice(None), slice(int(rows[0]), int(rows[-1]) + 1), slice(None))
        cv.paint(sl, occ[None, sl[1], :], value)


def paint_body(cv: Canvas, sc: Scene) -> None:
    anat = sc.anat
    am, bm = anat.muscle_semi
    half = np.array([am + anat.fat + 5, bm + anat.fat + 5, 400.0])
    lo, hi = box([0, anat.muscle_centre_y, 0], half)
    sl = cv.bbox(lo, hi)
    if sl is None:
        return
    x, y, z = cv.coords(sl)
    tex = sc.tex[sl]
    taper = anat.taper(z)
    fill(cv, sl, anat.body(x, y, z, taper), HU.FAT + f32(8.0) * tex)
    if anat.female:  # breasts: fibroglandular tissue in fat, anterior to the pectoral muscles
        size = sc.patient.params["breast_size"] * (0.8 + 0.02 * (sc.patient.bmi - 20))
        for sgn in (-1.0, 1.0):
            c = [sgn * 0.42 * anat.a_c, anat.y_c - anat.b_c - anat.muscle_ant - 0.6 * anat.fat, -40.0]
            semi = np.array([62.0, 32.0, 55.0]) * size
            bsl = cv.bbox(*box(c, semi))
            if bsl is None:
                continue
            bx, by, bz = cv.coords(bsl)
            glandular = f32(-55.0) + f32(55.0) * sc.lob[bsl]
            fill(cv, bsl, shapes.ellipsoid(bx, by, bz, c, semi), glandular)
    fill(cv, sl, anat.muscle(x, y, z, taper), HU.MUSCLE + f32(5.0) * tex)
    # Inside the rib cage: mediastinal fat above the diaphragm, upper abdomen below it.
    cav, below = sc.cav[sl], sc.below[sl]
    fill(cv, sl, cav.copy(), HU.FAT + f32(10.0) + f32(8.0) * tex)
    zsl = _below_box(cv, sc, sl)
    if zsl is not None:
        cav, below = sc.cav[zsl], sc.below[zsl]
        fill(cv, zsl, np.maximum(cav, -below), HU.MUSCLE)
        abdomen = f32(-25.0) + f32(45.0) * sc.lob[zsl]  # bowel and fat mixture
        fill(cv, zsl, np.maximum(cav, f32(5.0) - below), abdomen)


def _below_box(cv: Canvas, sc: Scene, sl: Slices) -> Slices | None:
    """Restrict ``sl`` to the slices that reach below the diaphragm dome tops."""
    lo = np.array([-500.0, -500.0, -2000.0])
    hi = np.array([500.0, 500.0, sc.anat.z_dome_top + 20.0])
    zb = cv.bbox(lo, hi)
    if zb is None:
        return None
    z0, z1 = max(sl[0].start, zb[0].start), min(sl[0].stop, zb[0].stop)
    if z1 <= z0:
        return None
    return (slice(z0, z1), sl[1], sl[2])


def paint_abdomen(cv: Canvas, sc: Scene) -> None:
    """Liver under the right dome, spleen and stomach (air anterior: the patient is supine)."""
    anat = sc.anat
    zt = anat.z_dome_top
    liver_c = [-0.28 * anat.a_c, anat.y_c + 0.05 * anat.b_c, zt - 80.0]
    liver_s = [0.95 * anat.a_c, 0.92 * anat.b_c, 105.0]
    sl = cv.bbox(*box(liver_c, liver_s))
    sl = None if sl is None else _below_box(cv, sc, sl)
    if sl is not None:
        x, y, z = cv.coords(sl)
        d = shapes.ellipsoid(x, y, z, liver_c, liver_s)
        d = np.maximum(d, f32(5.0) - sc.below[sl])
        d = np.maximum(d, sc.cav[sl] + f32(3.0))
        d = np.maximum(d, x - f32(0.25 * anat.a_c))
        fill(cv, sl, d, f32(sc.patient.params["liver_hu"]) + f32(5.0) * sc.tex[sl], LABEL_IDS["liver"])
    spleen_c = [0.68 * anat.a_c, anat.y_c + 0.55 * anat.b_c, zt - 60.0]
    spleen_s = [28.0, 42.0, 55.0]
    sl = cv.bbox(*box(spleen_c, spleen_s))
    if sl is not None:
        x, y, z = cv.coords(sl)
        d = np.maximum(shapes.ellipsoid(x, y, z, spleen_c, spleen_s), f32(5.0) - sc.below[sl])
        fill(cv, sl, d, HU.SPLEEN + f32(4.0) * sc.tex[sl], LABEL_IDS["spleen"])
    stom_c = np.array([0.42 * anat.a_c, anat.y_c - 0.3 * anat.b_c, zt - 55.0])
    stom_s = [48.0, 38.0, 45.0]
    paint_stomach(cv, sc, stom_c, stom_s, clip_to_diaphragm=True)


def paint_stomach(cv: Canvas, sc: Scene, centre, semi, clip_to_diaphragm: bool) -> None:
    """Stomach wall and content with an air-fluid level (also the hiatal hernia, above the diaphragm)."""
    sl = cv.bbox(*box(centre, semi))
    if sl is None:
        return
    x, y, z = cv.coords(sl)
    d = shapes.ellipsoid(x, y, z, centre, semi)
    if clip_to_diaphragm:
        d = np.maximum(d, f32(5.0) - sc.below[sl])
    fill(cv, sl, d.copy(), HU.MUSCLE, LABEL_IDS["stomach"])
    inner = d + f32(3.0)
    content = f32(20.0) + f32(10.0) * sc.tex[sl]
    air_level = f32(centre[1] - 0.35 * semi[1])  # air rises anteriorly in a supine patient
    fill(cv, sl, np.maximum(inner, air_level - y), content)
    fill(cv, sl, np.maximum(inner, y - air_level), HU.AIR)
