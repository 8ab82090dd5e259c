"""Mediastinum: heart (with pericardium and coronaries), great vessels, central airways,
oesophagus (and hiatal hernia) and lymph nodes."""

from __future__ import annotations

import numpy as np

from voxelfm.data.phantom import shapes
from voxelfm.data.phantom.anatomy import Anatomy
from voxelfm.data.phantom.canvas import Canvas
from voxelfm.data.phantom.constants import HU, LABEL_IDS
from voxelfm.data.phantom.paint.body import paint_stomach
from voxelfm.data.phantom.paint.scene import Scene, box, f32, fill


def paint_heart(cv: Canvas, sc: Scene) -> None:
    anat = sc.anat
    p = sc.patient.params
    epi = 3.0 + 0.25 * max(sc.patient.bmi - 20, 0)
    pe = p["pericardial_mm"] if sc.has("pericardial_effusion") else 0.0
    sl = cv.bbox(*box(anat.heart_centre, anat.heart_axes.max() + epi + pe + 4))
    if sl is None:
        return
    # Heart-frame coordinates once; every shell and chamber is an ellipsoid in that frame.
    x, y, z = cv.coords(sl)
    r = anat.heart_rot.astype(np.float32)
    d = [x - f32(anat.heart_centre[0]), y - f32(anat.heart_centre[1]), z - f32(anat.heart_centre[2])]
    local = [r[0, a] * d[0] + r[1, a] * d[1] + r[2, a] * d[2] for a in range(3)]

    def shell(grow: float, centre=(0.0, 0.0, 0.0), semi=None) -> np.ndarray:
        semi = anat.heart_axes + grow if semi is None else semi
        return shapes.quadric_sdf([u - f32(c) for u, c in zip(local, centre, strict=True)], [f32(v) for v in semi])

    fill(cv, sl, shell(epi + pe), HU.FAT + f32(6.0) * sc.tex[sl])
    if pe:
        fill(cv, sl, shell(pe), HU.FLUID + f32(4.0))
    fill(cv, sl, shell(0.0), HU.MYOCARDIUM + f32(3.0) * sc.tex[sl], LABEL_IDS["heart"])
    # Chambers: blood is only ~10 HU below myocardium without contrast.
    for c, s_ in (((0.10, 0.25, 0.05), (0.55, 0.42, 0.45)), ((0.05, -0.35, 0.1), (0.5, 0.35, 0.45)),
                  ((-0.6, 0.2, 0.2), (0.32, 0.35, 0.38)), ((-0.5, -0.35, 0.0), (0.32, 0.33, 0.38))):
        fill(cv, sl, shell(0.0, np.array(c) * anat.heart_axes, np.array(s_) * anat.heart_axes), HU.BLOOD)


def coronary_paths(anat: Anatomy) -> list[np.ndarray]:
    """LAD, RCA and LCx as point lists on the epicardial surface (patient frame)."""
    ax = anat.heart_axes * 1.0 + 2.0

    def surf(along: np.ndarray, phi: np.ndarray) -> np.ndarray:
        # along: -1 at the base, +1 at the apex of the long axis; phi: angle around it
        s = np.sqrt(np.clip(1 - along * along, 0, 1))
        local = np.stack([along * ax[0], s * ax[1] * np.cos(phi), s * ax[2] * np.sin(phi)], axis=-1)
        return anat.heart_centre + local @ anat.heart_rot.T

    phis = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    ring = surf(np.zeros(72), phis)
    phi_ant = phis[np.argmin(ring[:, 1])]
    phi_right = phis[np.argmin(ring[:, 0])]
    sign = np.sign(np.angle(np.exp(1j * (phi_right - phi_ant)))) or 1.0
    lad = surf(np.linspace(-0.6, 0.85, 14), np.full(14, phi_ant - 0.25 * sign))
    rca = surf(np.full(14, -0.62), phi_ant + sign * np.linspace(0.3, 2.6, 14))
    lcx = surf(np.full(12, -0.62), phi_ant - sign * np.linspace(0.45, 2.2, 12))
    return [lad, rca, lcx]


def paint_great_vessels(cv: Canvas, sc: Scene) -> None:
    anat = sc.anat
    res = shapes.tube(cv, anat.aorta_pts, anat.aorta_r)
    if res is not None:
        fill(cv, res[0], res[1], HU.BLOOD, LABEL_IDS["aorta"])
    # Pulmonary trunk from the right ventricular outflow to the bifurcation, then to the hila.
    hc = anat.heart_centre
    trunk0 = hc + anat.heart_rot @ (np.array([-0.35, -0.55, 0.35]) * anat.heart_axes)
    bif = np.array([10.0, anat.y_c - 18.0, 2.0])
    for hil, r in ((anat.hila["left"], 9.5), (anat.hila["right"], 9.0)):
        pts = np.array([trunk0, 0.5 * (trunk0 + bif) + [0, 0, 6], bif, 0.5 * (bif + hil) + [0, 4, 4], hil])
        res = shapes.tube(cv, pts, np.array([13.5, 13.5, 12.0, r, r - 2]))
        if res is not None:
            fill(cv, res[0], res[1], HU.BLOOD, LABEL_IDS["pulmonary_artery"])
    # Coronary arteries (soft tissue in epicardial fat; visible only against fat).
    for path in coronary_paths(anat):
        res = shapes.tube(cv, path, np.full(len(path), 1.6))
        if res is not None:
            fill(cv, res[0], res[1], HU.BLOOD)


def paint_airways_central(cv: Canvas, sc: Scene) -> None:
    """Trachea and main bronchi: soft-tissue wall, air lumen (label = lumen)."""
    anat = sc.anat
    top = anat.z_apex + 80.0
    r_t = 8.5 + (1.5 if sc.patient.sex else 0.0)
    paths = [
        (np.array([[0.0, anat.y_c - 10, top], [0.0, anat.y_c - 4, 40.0], [0.0, 0.0, 0.0]]), [r_t, r_t, r_t * 0.85]),
        (np.array([[0.0, 0.0, 0.0], [-24.0, 2.0, -10.0], sc.ref.hila["right"] + [4, -6, 2]]), [7.0, 6.5, 5.5]),
        (np.array([[0.0, 0.0, 0.0], [26.0, 3.0, -16.0], sc.ref.hila["left"] + [-4, -6, 2]]), [6.5, 6.0, 5.0]),
    ]
    for pts, radii in paths:
        res = shapes.tube(cv, sc.to_scan(pts), np.asarray(radii) + 1.6)
        if res is None:
            continue
        sl, sdf = res
        fill(cv, sl, sdf.copy(), HU.MUSCLE)
        fill(cv, sl, sdf + f32(1.6), HU.AIR, LABEL_IDS["airways"])


def paint_esophagus(cv: Canvas, sc: Scene) -> None:
    anat = sc.anat
    ys = anat.y_spine - anat.vert_radius - 9.0
    pts = np.array([[2.0, ys - 4, anat.z_apex + 80], [6.0, ys, 0.0], [14.0, ys - 6, anat.z_dome_top - 10],
                    [30.0, ys - 25, anat.z_dome_top - 45]])
    res = shapes.tube(cv, pts, np.full(len(pts), 7.5))
    if res is not None:
        sl, sdf = res
        fill(cv, sl, sdf.copy(), HU.MUSCLE, LABEL_IDS["esophagus"])
        fill(cv, sl, sdf + f32(5.5), HU.AIR)  # a little swallowed air in the lumen
    if sc.has("hiatal_hernia"):
        r = sc.patient.params["hernia_mm"] / 2
        c = np.array([10.0, ys - 8.0, anat.z_dome_top - 0.5 * anat.dome_h + r * 0.7])
        paint_stomach(cv, sc, c, [r * 1.2, r, r], clip_to_diaphragm=False)


NODE_STATIONS = ((-14.0, -10.0, 32.0), (16.0, -12.0, 14.0), (2.0, 12.0, -24.0),
                 (-42.0, 2.0, -20.0), (44.0, 4.0, -26.0), (-4.0, -40.0, 26.0))


def paint_nodes(cv: Canvas, sc: Scene) -> float:
    """Normal small mediastinal nodes in everyone, enlarged ones with lymphadenopathy; returns the
    largest short axis (mm)."""
    rng = np.random.default_rng([sc.patient.params["anatomy_seed"], 11])
    nodes = [(NODE_STATIONS[i], rng.uniform(4.0, 8.0)) for i in rng.permutation(6)[:3]]
    if sc.has("lymphadenopathy"):
        p = sc.patient.params["nodes"]
        nodes += [(NODE_STATIONS[p["stations"][i]], p["short_mm"][i]) for i in range(p["n"])]
    sizes = []
    for c, short in nodes:
        semi = np.array([short / 2, short / 2, short * 0.7])
        c = sc.to_scan(np.asarray(c) + [0, 0, 0])
        sl = cv.bbox(*box(c, semi))
        if sl is None:
            continue
        x, y, z = cv.coords(sl)
        fill(cv, sl, shapes.ellipsoid(x, y, z, c, semi), HU.MUSCLE - f32(5.0))
        sizes.append(short)
    return round(float(max(sizes)), 1) if sizes else 0.0
