"""Findings painted over the normal anatomy (parenchymal disease, nodules, calcifications, medical
material) and what they measure; metal streak artefacts."""

from __future__ import annotations

import numpy as np

from voxelfm.data.phantom import shapes
from voxelfm.data.phantom.canvas import Canvas, Slices
from voxelfm.data.phantom.constants import HU, LABEL_IDS
from voxelfm.data.phantom.paint.mediastinum import coronary_paths
from voxelfm.data.phantom.paint.scene import Scene, box, f32, fill, lung_weight
from voxelfm.data.phantom.patient import Patient


def _ellipsoid_region(cv: Canvas, centre, radius: float, soft_mm: float) -> tuple[Slices, np.ndarray] | None:
    sl = cv.bbox(*box(centre, radius + soft_mm))
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
            w = lung_weight(cv, sl)
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
            w *= lung_weight(cv, sl)
            cv.add(sl, w, f32(o["delta_hu"]))
    if sc.has("consolidation"):
        c_p = p["consolidation"]
        side = c_p["side"]
        c = sc.to_scan(sc.ref.place_in_lung(side, sc.ref.lung_unit_to_point(side, c_p["unit_pos"]), 8.0))
        res = _ellipsoid_region(cv, c, c_p["radius_mm"], 5.0)
        if res is not None:
            sl, w = res
            w *= np.clip((sc.lob[sl] + f32(1.3)) / f32(0.4), 0.0, 1.0)
            w *= lung_weight(cv, sl)
            cv.paint(sl, w, f32(32.0) + f32(6.0) * sc.tex[sl])
    if sc.has("atelectasis"):  # plate-like subsegmental atelectasis in the lower zones
        a_p = p["atelectasis"]
        side = a_p["side"]
        for i in range(a_p["n_bands"]):
            u = np.array(a_p["unit_pos"][i])
            u[2] = -0.55 - 0.35 * abs(u[2])
            u[1] = 0.2 + 0.5 * abs(u[1])
            c = sc.to_scan(sc.ref.place_in_lung(side, sc.ref.lung_unit_to_point(side, u), 6.0))
            # Plate size: 38 x 28 x 3.5 mm unless the conspicuity knob made it explicit.
            scale, thick = p.get("atelectasis_scale", 1.0), p.get("atelectasis_mm", 3.5)
            sl = cv.bbox(*box(c, 40.0 * scale))
            if sl is None:
                continue
            x, y, z = cv.coords(sl)
            d = shapes.ellipsoid(x, y, z, c, [38.0 * scale, 28.0 * scale, thick])
            fill(cv, sl, d, f32(-40.0), weight=lung_weight(cv, sl))


#: One painted nodule: diameter (mm), centre (scan patient frame), kind, side, lobe.
Nodule = tuple[float, np.ndarray, str, str, str]


def paint_nodules(cv: Canvas, sc: Scene) -> list[Nodule] | None:
    """Lung nodules (solid, part-solid, ground-glass); returns them (None without the finding)."""
    if not sc.has("lung_nodule"):
        return None
    rng = np.random.default_rng([sc.patient.params["anatomy_seed"], 13])
    nodules = []
    for nod in sc.patient.params["nodules"]:
        r = nod["diameter_mm"] / 2.0
        side = nod["side"]
        c = sc.to_scan(sc.ref.place_in_lung(side, sc.ref.lung_unit_to_point(side, nod["unit_pos"]), r + 4.0))
        sl = cv.bbox(*box(c, 1.5 * r + 2))
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
            fill(cv, sl, d, HU.MUSCLE - f32(8.0) + f32(8.0) * sc.tex[sl], label)
        else:
            fill(cv, sl, d.copy(), f32(-520.0) + f32(40.0) * sc.tex[sl], label)
            if kind == "part-solid":
                fill(cv, sl, shapes.ellipsoid(x, y, z, c, [0.45 * r] * 3), HU.MUSCLE - f32(10.0))
        # A nodule smaller than a voxel still owns the voxel at its centre in the label map.
        k, j, i = np.rint(cv.geometry.world_to_index(cv.pose.to_world(c))).astype(int)
        if all(0 <= a < n for a, n in zip((k, j, i), cv.shape, strict=True)):
            cv.labels[k, j, i] = label
        nodules.append((nod["diameter_mm"], c, kind, side, sc.anat.lobe(side, c)))
    return nodules


def paint_calcifications(cv: Canvas, sc: Scene) -> float:
    """Aortic wall plaques and coronary calcium; returns the Agatston-like calcium score."""
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
        sl = cv.bbox(*box(c, r))
        if sl is None:
            continue
        x, y, z = cv.coords(sl)
        fill(cv, sl, shapes.ellipsoid(x, y, z, c, [r, r, r]), f32(hu))
    return round(float(score), 1)


def paint_medical_material(cv: Canvas, sc: Scene) -> list[np.ndarray]:
    """Pacemaker, port or sternotomy wires; returns the metal centres (streak sources)."""
    centres: list[np.ndarray] = []
    if not sc.has("medical_material"):
        return centres
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
        sl = cv.bbox(*box(dev, max(semi)))
        if sl is not None:
            x, y, z = cv.coords(sl)
            fill(cv, sl, shapes.ellipsoid(x, y, z, dev, semi), HU.METAL if kind == "pacemaker" else f32(1800.0))
        path = [dev, dev + [-sgn * 30.0, 25.0, 15.0], svc + [0, 0, 25.0], svc, ra]
        if kind == "pacemaker":
            path.append(rv)
        res = shapes.tube(cv, np.array(path), np.full(len(path), 1.2))
        if res is not None:
            fill(cv, res[0], res[1], f32(2500.0) if kind == "pacemaker" else f32(700.0))
        centres.append(dev)
    else:  # sternotomy wires around the sternum
        y_st = anat.y_c - anat.b_c - 7.0
        top = anat.z_apex - 50.0
        for i in range(5):
            zc = top - i * (anat.lung_height * 0.11)
            loop = np.array([[-17, y_st - 8, zc], [17, y_st - 8, zc], [17, y_st + 8, zc], [-17, y_st + 8, zc], [-17, y_st - 8, zc]])
            res = shapes.tube(cv, loop, np.full(5, 0.9))
            if res is not None:
                fill(cv, res[0], res[1], HU.METAL)
            centres.append(np.array([0.0, y_st, zc]))
    return centres


def add_metal_streaks(hu: np.ndarray, cv: Canvas, patient: Patient, metal_centres: list[np.ndarray]) -> None:
    """Streak artefacts radiating from metal (centres in the patient frame) in the slices that contain it."""
    if not metal_centres:
        return
    rng = np.random.default_rng([patient.params["anatomy_seed"], 17])
    wx, wy, wz = cv.world_axes
    for c in metal_centres:
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
