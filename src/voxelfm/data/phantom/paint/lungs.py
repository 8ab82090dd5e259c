"""Lungs: aerated parenchyma and pleural fluid, then vessel and bronchial trees grown in the
reference (full-inspiration) anatomy and mapped into this scan's."""

from __future__ import annotations

import numpy as np

from voxelfm.data.phantom import shapes
from voxelfm.data.phantom.canvas import Canvas, Slices
from voxelfm.data.phantom.constants import HU, LABEL_IDS
from voxelfm.data.phantom.paint.scene import SIDES, Scene, f32, fill, lung_weight
from voxelfm.data.phantom.vessels import Tree, grow_tree


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
        fill(cv, sl, lung, value, label)
        if level is not None:
            fill(cv, sl, np.maximum(cav, level - y), HU.FLUID + f32(3.0) * sc.tex[sl], LABEL_IDS["effusion"])
            if sc.has("atelectasis"):  # compressive atelectasis just above the fluid
                band_mm = sc.patient.params.get("atelectasis_band_mm", 14.0)
                band = np.maximum(np.maximum(cav, y - level), level - f32(band_mm) - y)
                fill(cv, sl, band, f32(-120.0) + f32(60.0) * sc.lob[sl])
    return boxes


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
            occ *= lung_weight(cv, vsl)
            cv.paint(vsl, occ, HU.BLOOD)
        thin.append((starts[~wide], ends[~wide], vessel.r0[~wide], vessel.r1[~wide]))
    if thin:
        dens = shapes.splat_segments(cv, *(np.concatenate(parts) for parts in zip(*thin, strict=True)))
        for sl in boxes.values():
            occ = dens[sl]
            occ *= lung_weight(cv, sl)
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
            wall = wall * sc.patient.params.get("peribronchial_factor", 2.3) + 0.6
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
        weight = lung_weight(cv, bsl)
        # wall: outer radius; lumen: the same SDF shifted by the wall thickness (mean over segments)
        fill(cv, bsl, sdf.copy(), HU.MUSCLE, weight=weight)
        fill(cv, bsl, sdf + f32(np.mean(wall)), HU.AIR, LABEL_IDS["airways"], weight=weight)
