"""Paint one scan: body wall, bones, lungs with vessels and airways, mediastinum, upper abdomen,
the scanner table, then the patient's findings. Produces HU (before the scanner model), the label
map and the measurements that need the rendered scene (volumes, calcium score, nodule centre).

Painting order matters: a later structure displaces an earlier one (and takes over its label),
the way the heart and aorta indent the lungs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelfm.data.phantom import shapes
from voxelfm.data.phantom.anatomy import Anatomy
from voxelfm.data.phantom.canvas import Canvas, Slices
from voxelfm.data.phantom.constants import HU, LABEL_IDS, SizePreset
from voxelfm.data.phantom.patient import Patient
from voxelfm.data.phantom.texture import smooth_field
from voxelfm.data.phantom.vessels import Tree, grow_tree

f32 = np.float32
SIDES = ("left", "right")


@dataclass
class Scene:
    """Everything the renderer knows about a scan besides the arrays."""

    anat: Anatomy
    ref: Anatomy            # same patient at full inspiration: trees and lesions are placed here
    patient: Patient
    preset: SizePreset
    rng: np.random.Generator  # scan-level randomness (texture realisation)
    tex: np.ndarray | None = None
    lob: np.ndarray | None = None
    cav: np.ndarray | None = None    # rib-cage cavity SDF on the full grid (computed once)
    below: np.ndarray | None = None  # diaphragm height minus z on the full grid (> 0 below it)
    heart_clear: np.ndarray | None = None  # heart SDF grown by 5 mm (large outside its box)
    metal_centres: list[np.ndarray] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)

    def to_scan(self, p) -> np.ndarray:
        """Map a point placed in the reference (full-inspiration) anatomy to this scan's anatomy."""
        p = np.array(p, dtype=np.float64)
        ratio = self.anat.lung_height / self.ref.lung_height
        top = self.anat.z_apex
        p[..., 2] = np.where(p[..., 2] < top, top - (top - p[..., 2]) * ratio, p[..., 2])
        return p

    def has(self, finding: str) -> bool:
        return self.patient.findings.get(finding, 0) == 1


def _fill(cv: Canvas, sl: Slices | None, sdf: np.ndarray, value, label: int | None = None,
          weight: np.ndarray | None = None) -> np.ndarray | None:
    if sl is None:
        return None
    occ = cv.occupancy(sdf, inplace=True)
    if weight is not None:
        occ *= weight
    cv.paint(sl, occ, value, label)
    return occ


def _box(centre, half) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(centre, dtype=np.float64)
    h = np.broadcast_to(np.asarray(half, dtype=np.float64), (3,))
    return c - h, c + h


# -- body wall, table, abdomen ------------------------------------------------------------------
def paint_table(cv: Canvas, sc: Scene) -> None:
    """Curved carbon-fibre table with foam core and a thin pad, fixed in the world frame."""
    anat = sc.anat
    wx, wy, _ = cv.world_axes  # relative to the pose translation
    back = cv.pose.rotation @ np.array([0.0, anat.back_y, 0.0])
    pad = 10.0 + 10.0 * sc.rng.random()
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
    lo, hi = _box([0, anat.muscle_centre_y, 0], half)
    sl = cv.bbox(lo, hi)
    if sl is None:
        return
    x, y, z = cv.coords(sl)
    tex = sc.tex[sl]
    taper = anat.taper(z)
    _fill(cv, sl, anat.body(x, y, z, taper), HU.FAT + f32(8.0) * tex)
    if anat.female:  # breasts: fibroglandular tissue in fat, anterior to the pectoral muscles
        size = sc.patient.params["breast_size"] * (0.8 + 0.02 * (sc.patient.bmi - 20))
        for sgn in (-1.0, 1.0):
            c = [sgn * 0.42 * anat.a_c, anat.y_c - anat.b_c - anat.muscle_ant - 0.6 * anat.fat, -40.0]
            semi = np.array([62.0, 32.0, 55.0]) * size
            bsl = cv.bbox(*_box(c, semi))
            if bsl is None:
                continue
            bx, by, bz = cv.coords(bsl)
            glandular = f32(-55.0) + f32(55.0) * sc.lob[bsl]
            _fill(cv, bsl, shapes.ellipsoid(bx, by, bz, c, semi), glandular)
    _fill(cv, sl, anat.muscle(x, y, z, taper), HU.MUSCLE + f32(5.0) * tex)
    # Inside the rib cage: mediastinal fat above the diaphragm, upper abdomen below it.
    cav, below = sc.cav[sl], sc.below[sl]
    _fill(cv, sl, cav.copy(), HU.FAT + f32(10.0) + f32(8.0) * tex)
    zsl = _below_box(cv, sc, sl)
    if zsl is not None:
        cav, below = sc.cav[zsl], sc.below[zsl]
        _fill(cv, zsl, np.maximum(cav, -below), HU.MUSCLE)
        abdomen = f32(-25.0) + f32(45.0) * sc.lob[zsl]  # bowel and fat mixture
        _fill(cv, zsl, np.maximum(cav, f32(5.0) - below), abdomen)


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
    sl = cv.bbox(*_box(liver_c, liver_s))
    sl = None if sl is None else _below_box(cv, sc, sl)
    if sl is not None:
        x, y, z = cv.coords(sl)
        d = shapes.ellipsoid(x, y, z, liver_c, liver_s)
        d = np.maximum(d, f32(5.0) - sc.below[sl])
        d = np.maximum(d, sc.cav[sl] + f32(3.0))
        d = np.maximum(d, x - f32(0.25 * anat.a_c))
        _fill(cv, sl, d, f32(sc.patient.params["liver_hu"]) + f32(5.0) * sc.tex[sl], LABEL_IDS["liver"])
    spleen_c = [0.68 * anat.a_c, anat.y_c + 0.55 * anat.b_c, zt - 60.0]
    spleen_s = [28.0, 42.0, 55.0]
    sl = cv.bbox(*_box(spleen_c, spleen_s))
    if sl is not None:
        x, y, z = cv.coords(sl)
        d = np.maximum(shapes.ellipsoid(x, y, z, spleen_c, spleen_s), f32(5.0) - sc.below[sl])
        _fill(cv, sl, d, HU.SPLEEN + f32(4.0) * sc.tex[sl], LABEL_IDS["spleen"])
    stom_c = np.array([0.42 * anat.a_c, anat.y_c - 0.3 * anat.b_c, zt - 55.0])
    stom_s = [48.0, 38.0, 45.0]
    _stomach(cv, sc, stom_c, stom_s, clip_to_diaphragm=True)


def _stomach(cv: Canvas, sc: Scene, centre, semi, clip_to_diaphragm: bool) -> None:
    sl = cv.bbox(*_box(centre, semi))
    if sl is None:
        return
    x, y, z = cv.coords(sl)
    d = shapes.ellipsoid(x, y, z, centre, semi)
    if clip_to_diaphragm:
        d = np.maximum(d, f32(5.0) - sc.below[sl])
    _fill(cv, sl, d.copy(), HU.MUSCLE, LABEL_IDS["stomach"])
    inner = d + f32(3.0)
    content = f32(20.0) + f32(10.0) * sc.tex[sl]
    air_level = f32(centre[1] - 0.35 * semi[1])  # air rises anteriorly in a supine patient
    _fill(cv, sl, np.maximum(inner, air_level - y), content)
    _fill(cv, sl, np.maximum(inner, y - air_level), HU.AIR)


# -- lungs ---------------------------------------------------------------------------------------
def _effusion_level(sc: Scene, side: str, z: np.ndarray) -> np.ndarray | None:
    p = sc.patient.params
    if not sc.has("pleural_effusion") or p["effusion_side"] not in (side, "bilateral"):
        return None
    anat = sc.anat
    depth = p["effusion_depth"] * 2.0 * anat.b_c
    if p["effusion_side"] == "bilateral" and side == "left":
        depth *= 0.7
    rise = np.clip((f32(anat.z_dome_top + 0.75 * anat.lung_height) - z) / f32(anat.lung_height), 0.0, 1.0)
    return f32(anat.y_c + anat.b_c) - f32(depth) * (f32(0.25) + f32(0.75) * rise)


def paint_lungs(cv: Canvas, sc: Scene) -> dict[str, Slices]:
    """Aerated lungs (gravity gradient, texture) and dependent pleural fluid; returns lung boxes."""
    anat = sc.anat
    boxes: dict[str, Slices] = {}
    base = HU.LUNG + 140.0 * (1.0 - anat.inspiration)  # expiration: denser lungs
    for side in SIDES:
        sl = cv.bbox(*anat.lung_box(side))
        if sl is None:
            continue
        boxes[side] = sl
        x, y, z = cv.coords(sl)
        cav = anat.hemithorax(x, y, z, side, cavity=sc.cav[sl], below=sc.below[sl], heart_clear=sc.heart_clear[sl])
        level = _effusion_level(sc, side, z)
        lung = cav if level is None else np.maximum(cav, y - level)
        value = f32(base) + f32(30.0) * (y - f32(anat.y_c)) / f32(anat.b_c) + f32(14.0) * sc.tex[sl]
        label = LABEL_IDS["lung_left" if side == "left" else "lung_right"]
        _fill(cv, sl, lung, value, label)
        if level is not None:
            _fill(cv, sl, np.maximum(cav, level - y), HU.FLUID + f32(3.0) * sc.tex[sl], LABEL_IDS["effusion"])
            if sc.has("atelectasis"):  # compressive atelectasis just above the fluid
                band = np.maximum(np.maximum(cav, y - level), level - f32(14.0) - y)
                _fill(cv, sl, band, f32(-120.0) + f32(60.0) * sc.lob[sl])
    return boxes


def _lung_weight(cv: Canvas, sl: Slices) -> np.ndarray:
    lab = cv.labels[sl]
    return ((lab == LABEL_IDS["lung_left"]) | (lab == LABEL_IDS["lung_right"])).astype(np.float32)


def grow_trees(sc: Scene) -> dict[str, dict[str, list[Tree]]]:
    """Arterial and venous trees of both lungs, grown in the reference anatomy."""
    ref = sc.ref
    trees: dict[str, dict[str, list[Tree]]] = {}
    for s_i, side in enumerate(SIDES):
        rng = np.random.default_rng([sc.patient.params["anatomy_seed"], 7, s_i])
        sgn = 1.0 if side == "left" else -1.0
        hil = ref.hila[side]

        def inside(pts: np.ndarray, side=side) -> np.ndarray:
            q = pts.astype(np.float32)
            return ref.hemithorax(q[:, 0], q[:, 1], q[:, 2], side).astype(np.float64)

        min_r = sc.preset.vessel_min_radius_mm
        art_dirs = np.array([[sgn * 0.5, -0.1, 1.0], [sgn * 1.0, -0.4, 0.1], [sgn * 0.5, 0.5, -1.0], [sgn * 0.6, -0.5, -0.8]])
        arteries = [grow_tree(rng, hil, art_dirs, np.array([5.0, 4.2, 5.5, 4.0]), inside, min_r, outward_from=hil)]
        vroot = hil + np.array([-sgn * 6.0, -4.0, -22.0])
        vein_dirs = np.array([[sgn * 0.6, -0.3, 1.0], [sgn * 0.8, 0.4, -0.6], [sgn * 1.0, -0.6, -0.3]])
        veins = [grow_tree(rng, vroot, vein_dirs, np.array([4.5, 4.8, 3.6]), inside, min_r, outward_from=vroot)]
        trees[side] = {"arteries": arteries, "veins": veins}
    return trees


def _concat(trees: list[Tree]) -> Tree:
    return Tree(np.vstack([t.starts for t in trees]), np.vstack([t.ends for t in trees]),
                np.concatenate([t.r0 for t in trees]), np.concatenate([t.r1 for t in trees]),
                np.concatenate([t.generation for t in trees]))


def paint_vessels(cv: Canvas, sc: Scene, trees, boxes: dict[str, Slices]) -> None:
    """Pulmonary vessels: SDF tubes for branches wider than a voxel, volume splats for the rest."""
    thin = []
    for side in boxes:
        vessel = _concat(trees[side]["arteries"] + trees[side]["veins"])
        starts, ends = sc.to_scan(vessel.starts), sc.to_scan(vessel.ends)
        wide = vessel.r0 >= 0.75 * cv.h
        res = shapes.segments(cv, starts[wide], ends[wide], vessel.r0[wide], vessel.r1[wide])
        if res is not None:
            vsl, sdf = res
            occ = cv.occupancy(sdf, inplace=True)
            occ *= _lung_weight(cv, vsl)
            cv.paint(vsl, occ, HU.BLOOD)
        thin.append((starts[~wide], ends[~wide], vessel.r0[~wide], vessel.r1[~wide]))
    if thin:
        dens = shapes.splat_segments(cv, *(np.concatenate(parts) for parts in zip(*thin, strict=True)))
        for sl in boxes.values():
            occ = dens[sl]
            occ *= _lung_weight(cv, sl)
            cv.paint(sl, occ, HU.BLOOD)


def paint_bronchi(cv: Canvas, sc: Scene, trees, boxes: dict[str, Slices]) -> None:
    """Intrapulmonary bronchi beside the arteries; dilated (bronchiectasis) or thick-walled."""
    max_gen = 3 if sc.preset.name == "tiny" else 5
    for side in boxes:
        art = _concat(trees[side]["arteries"])
        art = art.select(art.generation <= max_gen)
        if len(art.starts) == 0:
            continue
        d = art.ends - art.starts
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
        off = np.cross(d, np.array([0.0, 0.0, 1.0]))
        off /= np.linalg.norm(off, axis=1, keepdims=True) + 1e-9
        rb0, rb1 = 0.8 * art.r0, 0.8 * art.r1
        if sc.has("bronchiectasis"):  # lower-lobe bronchi wider than their arteries (signet ring)
            lower = (art.ends[:, 2] < sc.ref.hila[side][2]) & (art.generation >= 1)
            factor = np.where(lower, sc.patient.params["bronchiectasis_factor"], 1.0)
            rb0, rb1 = rb0 * factor, rb1 * np.maximum(factor, 1.0) * 1.1
        wall = 0.25 * rb0 + 0.5
        if sc.has("peribronchial_thickening"):
            wall = wall * 2.3 + 0.6
        shift = (art.r0 + rb0 + wall + 0.5)[:, None] * off
        # Bronchi much thinner than a voxel are invisible on CT (air lumen and wall average out).
        seen = rb0 + wall >= 0.6 * cv.h
        starts, ends = sc.to_scan((art.starts + shift)[seen]), sc.to_scan((art.ends + shift)[seen])
        rb0, rb1, wall = rb0[seen], rb1[seen], np.broadcast_to(wall, seen.shape)[seen]
        if not np.any(seen):
            continue
        res = shapes.segments(cv, starts, ends, rb0 + wall, rb1 + wall)
        if res is None:
            continue
        bsl, sdf = res
        weight = _lung_weight(cv, bsl)
        # wall: outer radius; lumen: the same SDF shifted by the wall thickness (mean over segments)
        _fill(cv, bsl, sdf.copy(), HU.MUSCLE, weight=weight)
        _fill(cv, bsl, sdf + f32(np.mean(wall)), HU.AIR, LABEL_IDS["airways"], weight=weight)


# -- mediastinum -----------------------------------------------------------------------------------
def paint_heart(cv: Canvas, sc: Scene) -> None:
    anat = sc.anat
    p = sc.patient.params
    epi = 3.0 + 0.25 * max(sc.patient.bmi - 20, 0)
    pe = p["pericardial_mm"] if sc.has("pericardial_effusion") else 0.0
    sl = cv.bbox(*_box(anat.heart_centre, anat.heart_axes.max() + epi + pe + 4))
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

    _fill(cv, sl, shell(epi + pe), HU.FAT + f32(6.0) * sc.tex[sl])
    if pe:
        _fill(cv, sl, shell(pe), HU.FLUID + f32(4.0))
    _fill(cv, sl, shell(0.0), HU.MYOCARDIUM + f32(3.0) * sc.tex[sl], LABEL_IDS["heart"])
    # Chambers: blood is only ~10 HU below myocardium without contrast.
    for c, s_ in (((0.10, 0.25, 0.05), (0.55, 0.42, 0.45)), ((0.05, -0.35, 0.1), (0.5, 0.35, 0.45)),
                  ((-0.6, 0.2, 0.2), (0.32, 0.35, 0.38)), ((-0.5, -0.35, 0.0), (0.32, 0.33, 0.38))):
        _fill(cv, sl, shell(0.0, np.array(c) * anat.heart_axes, np.array(s_) * anat.heart_axes), HU.BLOOD)


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
        _fill(cv, res[0], res[1], HU.BLOOD, LABEL_IDS["aorta"])
    # Pulmonary trunk from the right ventricular outflow to the bifurcation, then to the hila.
    hc = anat.heart_centre
    trunk0 = hc + anat.heart_rot @ (np.array([-0.35, -0.55, 0.35]) * anat.heart_axes)
    bif = np.array([10.0, anat.y_c - 18.0, 2.0])
    for hil, r in ((anat.hila["left"], 9.5), (anat.hila["right"], 9.0)):
        pts = np.array([trunk0, 0.5 * (trunk0 + bif) + [0, 0, 6], bif, 0.5 * (bif + hil) + [0, 4, 4], hil])
        res = shapes.tube(cv, pts, np.array([13.5, 13.5, 12.0, r, r - 2]))
        if res is not None:
            _fill(cv, res[0], res[1], HU.BLOOD, LABEL_IDS["pulmonary_artery"])
    # Coronary arteries (soft tissue in epicardial fat; visible only against fat).
    for path in coronary_paths(anat):
        res = shapes.tube(cv, path, np.full(len(path), 1.6))
        if res is not None:
            _fill(cv, res[0], res[1], HU.BLOOD)


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
        _fill(cv, sl, sdf.copy(), HU.MUSCLE)
        _fill(cv, sl, sdf + f32(1.6), HU.AIR, LABEL_IDS["airways"])


def paint_esophagus(cv: Canvas, sc: Scene) -> None:
    anat = sc.anat
    ys = anat.y_spine - anat.vert_radius - 9.0
    pts = np.array([[2.0, ys - 4, anat.z_apex + 80], [6.0, ys, 0.0], [14.0, ys - 6, anat.z_dome_top - 10],
                    [30.0, ys - 25, anat.z_dome_top - 45]])
    res = shapes.tube(cv, pts, np.full(len(pts), 7.5))
    if res is not None:
        sl, sdf = res
        _fill(cv, sl, sdf.copy(), HU.MUSCLE, LABEL_IDS["esophagus"])
        _fill(cv, sl, sdf + f32(5.5), HU.AIR)  # a little swallowed air in the lumen
    if sc.has("hiatal_hernia"):
        r = sc.patient.params["hernia_mm"] / 2
        c = np.array([10.0, ys - 8.0, anat.z_dome_top - 0.5 * anat.dome_h + r * 0.7])
        _stomach(cv, sc, c, [r * 1.2, r, r], clip_to_diaphragm=False)


NODE_STATIONS = ((-14.0, -10.0, 32.0), (16.0, -12.0, 14.0), (2.0, 12.0, -24.0),
                 (-42.0, 2.0, -20.0), (44.0, 4.0, -26.0), (-4.0, -40.0, 26.0))


def paint_nodes(cv: Canvas, sc: Scene) -> None:
    """Normal small mediastinal nodes in everyone; enlarged ones with lymphadenopathy."""
    rng = np.random.default_rng([sc.patient.params["anatomy_seed"], 11])
    nodes = [(NODE_STATIONS[i], rng.uniform(4.0, 8.0)) for i in rng.permutation(6)[:3]]
    if sc.has("lymphadenopathy"):
        p = sc.patient.params["nodes"]
        nodes += [(NODE_STATIONS[p["stations"][i]], p["short_mm"][i]) for i in range(p["n"])]
    sizes = []
    for c, short in nodes:
        semi = np.array([short / 2, short / 2, short * 0.7])
        c = sc.to_scan(np.asarray(c) + [0, 0, 0])
        sl = cv.bbox(*_box(c, semi))
        if sl is None:
            continue
        x, y, z = cv.coords(sl)
        _fill(cv, sl, shapes.ellipsoid(x, y, z, c, semi), HU.MUSCLE - f32(5.0))
        sizes.append(short)
    sc.measurements["largest_node_mm"] = round(float(max(sizes)), 1) if sizes else 0.0


# -- bones -------------------------------------------------------------------------------------
def _bone(cv: Canvas, sl: Slices, sdf: np.ndarray, label: int, trabecular: float, cortex_mm: float = 1.6) -> None:
    _fill(cv, sl, sdf.copy(), HU.CORTICAL_BONE * 0.9, label)
    _fill(cv, sl, sdf + f32(cortex_mm), f32(trabecular))


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
    _fill(cv, sl, body_ell.copy(), f32(85.0))  # discs (then overdrawn by the bodies)
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
    _fill(cv, sl, shapes.ellipse_xy(x, y, (0.0, y_canal), (8.0, 7.5)), f32(25.0))  # canal / cord
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
            _fill(cv, res[0], res[1], f32(cart_hu))


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


# -- findings ------------------------------------------------------------------------------------
def _ellipsoid_region(cv: Canvas, centre, radius: float, soft_mm: float) -> tuple[Slices, np.ndarray] | None:
    sl = cv.bbox(*_box(centre, radius + soft_mm))
    if sl is None:
        return None
    x, y, z = cv.coords(sl)
    d = shapes.ellipsoid(x, y, z, centre, [radius, radius * 0.85, radius * 1.1])
    return sl, np.clip(f32(0.5) - d / f32(soft_mm), 0.0, 1.0)


def paint_parenchymal_disease(cv: Canvas, sc: Scene, boxes: dict[str, Slices]) -> None:
    p = sc.patient.params
    anat = sc.anat
    if sc.has("emphysema"):
        sev = p["emphysema_severity"]
        for side, sl in boxes.items():
            x, y, z = cv.coords(sl)
            w = _lung_weight(cv, sl)
            # Centrilobular emphysema: upper-zone predominant clusters of low attenuation.
            upper = np.clip((z - f32(anat.hila[side][2] - 40.0)) / f32(80.0), 0.0, 1.0)
            thr = f32(1.25 - 0.75 * sev) + f32(0.9) * (f32(1.0) - upper)
            holes = np.clip((sc.tex[sl] + f32(0.35) * sc.lob[sl] - thr) / f32(0.25), 0.0, 1.0)
            holes *= w
            cv.paint(sl, holes, f32(-985.0))
            cv.add(sl, w * upper, f32(-18.0 * sev))
    if sc.has("lung_opacity"):
        o = p["opacity"]
        for i in range(o["n"]):
            side = o["sides"][i]
            c = sc.to_scan(sc.ref.place_in_lung(side, sc.ref.lung_unit_to_point(side, o["unit_pos"][i]), 10.0))
            res = _ellipsoid_region(cv, c, o["radius_mm"][i], 10.0)
            if res is None:
                continue
            sl, w = res
            w *= np.clip((sc.lob[sl] + f32(0.8)) / f32(0.6), 0.0, 1.0)  # patchy ground glass
            w *= _lung_weight(cv, sl)
            cv.add(sl, w, f32(o["delta_hu"]))
    if sc.has("consolidation"):
        c_p = p["consolidation"]
        side = c_p["side"]
        c = sc.to_scan(sc.ref.place_in_lung(side, sc.ref.lung_unit_to_point(side, c_p["unit_pos"]), 8.0))
        res = _ellipsoid_region(cv, c, c_p["radius_mm"], 5.0)
        if res is not None:
            sl, w = res
            w *= np.clip((sc.lob[sl] + f32(1.3)) / f32(0.4), 0.0, 1.0)
            w *= _lung_weight(cv, sl)
            cv.paint(sl, w, f32(32.0) + f32(6.0) * sc.tex[sl])
    if sc.has("atelectasis"):  # plate-like subsegmental atelectasis in the lower zones
        a_p = p["atelectasis"]
        side = a_p["side"]
        for i in range(a_p["n_bands"]):
            u = np.array(a_p["unit_pos"][i])
            u[2] = -0.55 - 0.35 * abs(u[2])
            u[1] = 0.2 + 0.5 * abs(u[1])
            c = sc.to_scan(sc.ref.place_in_lung(side, sc.ref.lung_unit_to_point(side, u), 6.0))
            sl = cv.bbox(*_box(c, 40.0))
            if sl is None:
                continue
            x, y, z = cv.coords(sl)
            d = shapes.ellipsoid(x, y, z, c, [38.0, 28.0, 3.5])
            _fill(cv, sl, d, f32(-40.0), weight=_lung_weight(cv, sl))


def paint_nodules(cv: Canvas, sc: Scene) -> None:
    """Lung nodules (solid, part-solid, ground-glass); records the largest one's centre."""
    if not sc.has("lung_nodule"):
        sc.measurements["largest_nodule_mm"] = 0.0
        return
    rng = np.random.default_rng([sc.patient.params["anatomy_seed"], 13])
    nodules = []
    for nod in sc.patient.params["nodules"]:
        r = nod["diameter_mm"] / 2.0
        side = nod["side"]
        c = sc.to_scan(sc.ref.place_in_lung(side, sc.ref.lung_unit_to_point(side, nod["unit_pos"]), r + 4.0))
        sl = cv.bbox(*_box(c, 1.5 * r + 2))
        lobes = rng.standard_normal((2, 3))
        if sl is None:
            continue
        x, y, z = cv.coords(sl)
        d = shapes.ellipsoid(x, y, z, c, [r, r, r])
        for off in lobes:  # lobulated contour: two smaller overlapping spheres
            off = off / np.linalg.norm(off) * r * 0.5
            d = np.minimum(d, shapes.ellipsoid(x, y, z, c + off, [r * (0.55 + nod["lobulation"])] * 3))
        kind = nod["kind"]
        label = LABEL_IDS["nodule"]
        if kind == "solid":
            _fill(cv, sl, d, HU.MUSCLE - f32(8.0) + f32(8.0) * sc.tex[sl], label)
        else:
            _fill(cv, sl, d.copy(), f32(-520.0) + f32(40.0) * sc.tex[sl], label)
            if kind == "part-solid":
                _fill(cv, sl, shapes.ellipsoid(x, y, z, c, [0.45 * r] * 3), HU.MUSCLE - f32(10.0))
        # A nodule smaller than a voxel still owns the voxel at its centre in the label map.
        k, j, i = np.rint(cv.geometry.world_to_index(cv.pose.to_world(c))).astype(int)
        if all(0 <= a < n for a, n in zip((k, j, i), cv.shape, strict=True)):
            cv.labels[k, j, i] = label
        nodules.append((nod["diameter_mm"], c, kind, side, sc.anat.lobe(side, c)))
    sc.measurements["nodules"] = nodules
    sc.measurements["largest_nodule_mm"] = float(max((n[0] for n in nodules), default=0.0))


def paint_calcifications(cv: Canvas, sc: Scene) -> None:
    """Aortic wall plaques and coronary calcium; computes an Agatston-like calcium score."""
    p = sc.patient.params["calcium"]
    anat = sc.anat
    age_factor = float(np.clip((sc.patient.age - 35.0) / 30.0, 0.3, 1.8))
    score = 0.0
    spheres: list[tuple[np.ndarray, float, float]] = []
    if sc.has("arterial_wall_calcification"):
        pts = anat.aorta_pts
        n = min(16, max(2, int(p["aortic_n"] * age_factor)))
        for i in range(n):
            k = int(p["aortic_t"][i] * (len(pts) - 2))
            tangent = pts[k + 1] - pts[k]
            tangent /= np.linalg.norm(tangent)
            n1 = np.cross(tangent, [0.0, 0.0, 1.0]) if abs(tangent[2]) < 0.9 else np.cross(tangent, [1.0, 0, 0])
            n1 /= np.linalg.norm(n1)
            n2 = np.cross(tangent, n1)
            ang = p["aortic_angle"][i]
            c = pts[k] + (anat.aorta_r[k] - 0.6) * (np.cos(ang) * n1 + np.sin(ang) * n2)
            spheres.append((c, p["aortic_r"][i], p["hu"][i]))
    if sc.has("coronary_artery_wall_calcification"):
        paths = coronary_paths(anat)
        n = min(8, max(1, int(p["coronary_n"] * age_factor)))
        for i in range(n):
            path = paths[p["coronary_vessel"][i]]
            c = path[int(p["coronary_t"][i] * (len(path) - 1))]
            spheres.append((c, p["coronary_r"][i], p["hu"][16 + i]))
        score = coronary_calcium_score(sc.patient)
    for c, r, hu in spheres:
        sl = cv.bbox(*_box(c, r))
        if sl is None:
            continue
        x, y, z = cv.coords(sl)
        _fill(cv, sl, shapes.ellipsoid(x, y, z, c, [r, r, r]), f32(hu))
    sc.measurements["calcium_score"] = round(float(score), 1)


def paint_medical_material(cv: Canvas, sc: Scene) -> None:
    if not sc.has("medical_material"):
        return
    anat = sc.anat
    kind = sc.patient.params["material"]
    svc = np.array([-18.0, anat.y_c - 0.35 * anat.b_c, 30.0])
    ra = anat.heart_centre + anat.heart_rot @ (np.array([-0.5, -0.45, 0.0]) * anat.heart_axes)
    rv = anat.heart_centre + anat.heart_rot @ (np.array([0.45, -0.3, 0.1]) * anat.heart_axes)
    chest_wall_y = anat.y_c - anat.b_c - anat.muscle_ant - 0.5 * anat.fat - 4.0
    if kind in ("pacemaker", "port"):
        sgn = 1.0 if kind == "pacemaker" else -1.0
        dev = np.array([sgn * 0.55 * anat.a_c, chest_wall_y, anat.z_apex - 35.0])
        semi = [24.0, 5.0, 20.0] if kind == "pacemaker" else [13.0, 6.0, 13.0]
        sl = cv.bbox(*_box(dev, max(semi)))
        if sl is not None:
            x, y, z = cv.coords(sl)
            _fill(cv, sl, shapes.ellipsoid(x, y, z, dev, semi), HU.METAL if kind == "pacemaker" else f32(1800.0))
        path = [dev, dev + [-sgn * 30.0, 25.0, 15.0], svc + [0, 0, 25.0], svc, ra]
        if kind == "pacemaker":
            path.append(rv)
        res = shapes.tube(cv, np.array(path), np.full(len(path), 1.2))
        if res is not None:
            _fill(cv, res[0], res[1], f32(2500.0) if kind == "pacemaker" else f32(700.0))
        sc.metal_centres.append(dev)
    else:  # sternotomy wires around the sternum
        y_st = anat.y_c - anat.b_c - 7.0
        top = anat.z_apex - 50.0
        for i in range(5):
            zc = top - i * (anat.lung_height * 0.11)
            loop = np.array([[-17, y_st - 8, zc], [17, y_st - 8, zc], [17, y_st + 8, zc], [-17, y_st + 8, zc], [-17, y_st - 8, zc]])
            res = shapes.tube(cv, loop, np.full(5, 0.9))
            if res is not None:
                _fill(cv, res[0], res[1], HU.METAL)
            sc.metal_centres.append(np.array([0.0, y_st, zc]))


def add_metal_streaks(hu: np.ndarray, cv: Canvas, sc: Scene) -> None:
    """Streak artefacts radiating from metal in the slices that contain it."""
    if not sc.metal_centres:
        return
    rng = np.random.default_rng([sc.patient.params["anatomy_seed"], 17])
    wx, wy, wz = cv.world_axes
    for c in sc.metal_centres:
        w = cv.pose.rotation @ c
        ks = np.nonzero(np.abs(wz - w[2]) < 14.0)[0]
        if len(ks) == 0:
            continue
        dx = wx[None, :] - f32(w[0])
        dy = wy[:, None] - f32(w[1])
        rho = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dy, dx)
        n = int(rng.integers(6, 14))
        pattern = np.cos(n * theta + rng.uniform(0, 2 * np.pi)) * np.cos(3 * n * theta)
        pattern *= f32(180.0) * np.exp(-rho / f32(70.0)) * (rho > 6.0)
        for k in ks:
            hu[k] += pattern.astype(np.float32) * f32(np.exp(-abs(wz[k] - w[2]) / 8.0))


def render(cv: Canvas, sc: Scene) -> None:
    """Paint the whole scene into ``cv`` (HU before the scanner model, labels final)."""
    spacing = cv.geometry.spacing
    sc.tex = smooth_field(sc.rng, cv.shape, spacing, sc.preset.texture_scale_mm)
    sc.lob = smooth_field(sc.rng, cv.shape, spacing, sc.preset.texture_scale_mm * 2.5)
    sc.cav = sc.anat.cavity(cv.X, cv.Y, cv.Z)
    # Height above/below the diaphragm, only where it matters (elsewhere far above it).
    sc.below = np.full(cv.shape, -1000.0, dtype=np.float32)
    low = cv.bbox(np.array([-600.0, -600.0, -3000.0]), np.array([600.0, 600.0, sc.anat.z_dome_top + 60.0]))
    if low is not None:
        sc.below[low] = sc.anat.diaphragm_z(cv.X[low], cv.Y[low]) - cv.Z[low]
    sc.heart_clear = np.full(cv.shape, 1000.0, dtype=np.float32)
    hsl = cv.bbox(*_box(sc.anat.heart_centre, sc.anat.heart_axes.max() + 8.0))
    if hsl is not None:
        sc.heart_clear[hsl] = sc.anat.heart(*cv.coords(hsl), grow=5.0)
    paint_table(cv, sc)
    paint_body(cv, sc)
    paint_abdomen(cv, sc)
    boxes = paint_lungs(cv, sc)
    trees = grow_trees(sc)
    paint_vessels(cv, sc, trees, boxes)
    paint_parenchymal_disease(cv, sc, boxes)
    paint_nodules(cv, sc)
    paint_bronchi(cv, sc, trees, boxes)
    paint_heart(cv, sc)
    paint_great_vessels(cv, sc)
    paint_esophagus(cv, sc)
    paint_airways_central(cv, sc)
    paint_nodes(cv, sc)
    paint_spine(cv, sc)
    paint_ribs(cv, sc)
    paint_sternum(cv, sc)
    paint_calcifications(cv, sc)
    paint_medical_material(cv, sc)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(cv.labels.ravel().astype(np.int64), minlength=max(LABEL_IDS.values()) + 1)
    sc.measurements["lung_volume_l"] = round((counts[LABEL_IDS["lung_left"]] + counts[LABEL_IDS["lung_right"]]) * voxel_ml / 1000.0, 3)
    sc.measurements["heart_volume_ml"] = round(counts[LABEL_IDS["heart"]] * voxel_ml, 1)
    sc.measurements["effusion_volume_ml"] = round(counts[LABEL_IDS["effusion"]] * voxel_ml, 1)


def coronary_calcium_score(patient: Patient) -> float:
    """Agatston-like score of the planted coronary lesions (0 without the finding).

    Each lesion contributes (volume / 3 mm) x density weight (1: <200 HU, 2: <300, 3: <400, 4: >=400),
    i.e. its mean area over 3 mm slices times the Agatston weight of its peak attenuation.
    """
    if patient.findings.get("coronary_artery_wall_calcification", 0) != 1:
        return 0.0
    p = patient.params["calcium"]
    age_factor = float(np.clip((patient.age - 35.0) / 30.0, 0.3, 1.8))
    n = min(8, max(1, int(p["coronary_n"] * age_factor)))
    score = 0.0
    for i in range(n):
        r, hu = p["coronary_r"][i], p["hu"][16 + i]
        weight = 1 if hu < 200 else 2 if hu < 300 else 3 if hu < 400 else 4
        score += (4.0 / 3.0 * np.pi * r**3) / 3.0 * weight
    return round(float(score), 1)
