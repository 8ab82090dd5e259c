"""The patient's anatomy in the patient frame (mm): sizes, positions and organ shape functions.

Patient frame: x → patient's left, y → posterior, z → superior; origin at the carina on the
midline. Body habitus (height, BMI, sex), age and the scan's inspiration level set the sizes;
the shape functions below are evaluated both on voxel blocks and on point batches (vessel growth,
nodule placement), so they only use elementwise numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxelfm.data.phantom import shapes
from voxelfm.data.phantom.patient import Patient


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / (np.linalg.norm(v) + 1e-12)


@dataclass
class Anatomy:
    """Millimetre parameters of one patient at one inspiration level."""

    # rib-cage cavity (inner thorax) and body wall
    a_c: float
    b_c: float
    y_c: float
    muscle_lat: float
    muscle_ant: float
    muscle_post: float
    fat: float
    # lungs and diaphragm
    z_apex: float
    lung_height: float
    dome_h: float
    recess: float
    inspiration: float
    # spine, heart, great vessels
    y_spine: float
    vert_radius: float
    heart_centre: np.ndarray
    heart_axes: np.ndarray
    heart_rot: np.ndarray
    aorta_pts: np.ndarray
    aorta_r: np.ndarray
    hila: dict[str, np.ndarray]
    female: bool
    age: float

    # -- derived sizes --------------------------------------------------------------------
    @property
    def z_dome_top(self) -> float:
        return self.z_apex - self.lung_height

    @property
    def z_d(self) -> float:
        """Height of the diaphragm's lateral base (dome top minus dome height)."""
        return self.z_dome_top - self.dome_h

    @property
    def z_lowest_lung(self) -> float:
        return self.z_d - self.recess - 4.0

    @property
    def muscle_centre_y(self) -> float:
        return self.y_c + (self.muscle_post - self.muscle_ant) / 2

    @property
    def muscle_semi(self) -> tuple[float, float]:
        return self.a_c + self.muscle_lat, self.b_c + (self.muscle_post + self.muscle_ant) / 2

    @property
    def back_y(self) -> float:
        """Posterior skin surface (flat where the patient lies on the table)."""
        return self.muscle_centre_y + self.muscle_semi[1] + 0.6 * self.fat

    # -- shape functions (elementwise on arrays of patient-frame coordinates) -----------
    def taper(self, z: np.ndarray) -> np.ndarray:
        """0 in the mid chest, rising to 1 toward the thoracic inlet above the lung apices."""
        t = np.clip((z - np.float32(self.z_apex - 70.0)) / np.float32(90.0), 0.0, 1.0)
        return t * t

    def body(self, x, y, z, taper: np.ndarray | None = None) -> np.ndarray:
        t = self.taper(z) if taper is None else taper
        am, bm = self.muscle_semi
        a = (am + self.fat) * (1.0 - 0.22 * t)
        b = (bm + self.fat) * (1.0 - 0.10 * t)
        d = shapes.ellipse_xy(x, y, (0.0, self.muscle_centre_y), (a, b))
        return np.maximum(d, y - np.float32(self.back_y))

    def muscle(self, x, y, z, taper: np.ndarray | None = None) -> np.ndarray:
        t = self.taper(z) if taper is None else taper
        am, bm = self.muscle_semi
        return shapes.ellipse_xy(x, y, (0.0, self.muscle_centre_y), (am * (1 - 0.22 * t), bm * (1 - 0.10 * t)))

    def cavity(self, x, y, z, taper: np.ndarray | None = None) -> np.ndarray:
        """Inside of the rib cage (thoracic and upper abdominal cavity)."""
        t = self.taper(z) if taper is None else taper
        d = shapes.ellipse_xy(x, y, (0.0, self.y_c), (self.a_c * (1 - 0.3 * t), self.b_c * (1 - 0.12 * t)))
        return np.maximum(d, z - np.float32(self.z_apex + 12.0))

    def diaphragm_z(self, x, y) -> np.ndarray:
        """Height of the diaphragm surface; the right dome sits ~15 mm higher (liver)."""
        ax = np.abs(x)
        u = (ax - np.float32(0.42 * self.a_c)) / np.float32(0.62 * self.a_c)
        right = np.clip(0.5 - x / np.float32(40.0), 0.0, 1.0) * np.float32(15.0)
        v = np.maximum(y - np.float32(self.y_c), 0.0) / np.float32(self.b_c)
        return np.float32(self.z_d) + np.float32(self.dome_h) * (1.0 - u * u) + right - np.float32(self.recess) * v * v

    def heart(self, x, y, z, grow: float = 0.0) -> np.ndarray:
        return shapes.ellipsoid(x, y, z, self.heart_centre, self.heart_axes + grow, self.heart_rot)

    def hemithorax(self, x, y, z, side: str, cavity: np.ndarray | None = None,
                   below: np.ndarray | None = None, heart_clear: np.ndarray | None = None) -> np.ndarray:
        """Pleural space of one side: cavity minus mediastinum, heart and spine, above the diaphragm.

        ``cavity``, ``below`` (= ``diaphragm_z - z``) and ``heart_clear`` (= ``heart(grow=5)``) may
        be passed precomputed for the block.
        """
        sgn = 1.0 if side == "left" else -1.0
        d = (self.cavity(x, y, z) if cavity is None else cavity) + np.float32(2.0)
        centre = (sgn * 0.47 * self.a_c, self.y_c + 4.0, self.z_apex - 0.5 * self.lung_height - 10.0)
        semi = (0.60 * self.a_c, 1.02 * self.b_c, 0.62 * self.lung_height + 30.0)
        d = np.maximum(d, shapes.ellipsoid(x, y, z, centre, semi))
        d = np.maximum(d, self.diaphragm_z(x, y) - z if below is None else below)
        # Mediastinum anterior to the spine: narrow behind the sternum (anterior junction),
        # wider toward the spine and low in the chest.
        depth = np.clip((y - np.float32(self.y_c - self.b_c)) * np.float32(0.16), 0.0, 22.0)
        half_w = np.float32(7.0) + depth + np.clip((np.float32(10.0) - z) / np.float32(8.0), 0.0, 12.0)
        med = np.maximum(np.abs(x - np.float32(4.0)) - half_w, y - np.float32(self.y_spine - 12.0))
        d = np.maximum(d, -med)
        d = np.maximum(d, -(self.heart(x, y, z, grow=5.0) if heart_clear is None else heart_clear))
        vert = shapes.ellipse_xy(x, y, (0.0, self.y_spine), (self.vert_radius * 1.15 + 6.0, self.vert_radius + 6.0))
        d = np.maximum(d, -vert)
        return np.maximum(d, sgn * np.float32(-1.0) * x + np.float32(2.0))  # stay on own side

    def lung_box(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        sgn = 1.0 if side == "left" else -1.0
        xs = sorted([sgn * 2.0, sgn * (self.a_c + 2.0)])
        lo = np.array([xs[0], self.y_c - self.b_c - 2, self.z_lowest_lung - 5])
        hi = np.array([xs[1], self.y_c + self.b_c + 2, self.z_apex + 5])
        return lo, hi

    def lung_unit_to_point(self, side: str, unit) -> np.ndarray:
        """Map a point of [-1, 1]^3 into the side's lung bounding region (for findings)."""
        sgn = 1.0 if side == "left" else -1.0
        u = np.asarray(unit, dtype=np.float64)
        cx = sgn * 0.55 * self.a_c
        cz = self.z_apex - 0.5 * self.lung_height - 10.0
        return np.array([cx + u[0] * 0.35 * self.a_c, self.y_c + u[1] * 0.75 * self.b_c,
                         cz + u[2] * 0.42 * self.lung_height])

    def place_in_lung(self, side: str, point, margin: float) -> np.ndarray:
        """Pull ``point`` toward the lung core until it lies ``margin`` mm inside the pleural space."""
        sgn = 1.0 if side == "left" else -1.0
        core = np.array([sgn * 0.55 * self.a_c, self.y_c, self.z_apex - 0.45 * self.lung_height])
        p = np.asarray(point, dtype=np.float64)
        ts = np.linspace(1.0, 0.0, 21)
        cands = core[None, :] + ts[:, None] * (p - core)[None, :]
        d = self.hemithorax(*[cands[:, a].astype(np.float32) for a in range(3)], side)
        ok = np.nonzero(d < -margin)[0]
        return cands[ok[0]] if len(ok) else core

    def lobe(self, side: str, p) -> str:
        """Lobe containing patient-frame point ``p`` from planar fissure approximations."""
        x, y, z = (float(v) for v in p)
        hil = self.hila[side]
        lower = z < hil[2] + 10.0 + 0.9 * (y - hil[1])  # oblique fissure: high posteriorly
        if side == "left":
            return "left lower lobe" if lower else "left upper lobe"
        if lower:
            return "right lower lobe"
        return "right middle lobe" if z < hil[2] - 5.0 and y < hil[1] + 10.0 else "right upper lobe"


def _catmull(points: np.ndarray, step: float) -> np.ndarray:
    """Smooth curve through ``points`` (Catmull-Rom), resampled about every ``step`` mm."""
    pts = np.asarray(points, dtype=np.float64)
    ext = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1 : i + 3]
        n = max(2, int(np.linalg.norm(p2 - p1) / step))
        for t in np.linspace(0, 1, n, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(pts[-1])
    return np.array(out)


def build_anatomy(patient: Patient, inspiration: float, emphysema: bool) -> Anatomy:
    """Sizes and positions of the anatomy of ``patient`` at the given inspiration level."""
    rng = np.random.default_rng(patient.params["anatomy_seed"])
    male = patient.sex == 1
    s_h = patient.height_cm / 170.0
    bmi = patient.bmi
    width = (1.06 if male else 0.97) * s_h ** 0.7 * (1 + 0.006 * (bmi - 25)) * rng.normal(1, 0.04)
    depth = (1.04 if male else 0.97) * s_h ** 0.6 * (1 + 0.010 * (bmi - 25)) * rng.normal(1, 0.05)
    if emphysema:
        depth *= 1.06  # barrel chest
    a_c = 122.0 * width
    b_c = 82.0 * depth
    y_c = -6.0 + rng.normal(0, 2)
    fat = float(np.clip(6 + 2.0 * (bmi - 20) + (4 if not male else 0) + rng.normal(0, 3), 3, 60))
    m_scale = (1.15 if male else 0.9) * (1.0 - 0.004 * max(patient.age - 50, 0))
    ins = float(np.clip(inspiration + (0.06 if emphysema else 0.0), 0.75, 1.12))
    lung_height = 200.0 * s_h * (1.05 if male else 1.0) * ins * rng.normal(1, 0.03)  # apex to dome top
    dome_h = (14.0 if emphysema else 32.0) * rng.normal(1, 0.1)
    z_apex = 92.0 * s_h + rng.normal(0, 4)
    vert_r = 17.0 * (1.08 if male else 1.0) * s_h
    y_spine = y_c + b_c - 0.9 * vert_r

    hs = patient.params["heart_scale"] * (width * depth) ** 0.5
    cardiomegaly = patient.findings.get("cardiomegaly", 0) == 1
    if cardiomegaly:
        hs *= patient.params["cardiomegaly_scale"]
    heart_axes = np.array([64.0, 46.0, 44.0]) * hs
    ang = np.deg2rad(patient.params["heart_angle_deg"])
    tilt = np.deg2rad(25.0)
    # Long axis: from base (right, posterior, superior) toward apex (left, anterior, inferior).
    long_ax = _unit([np.cos(ang) * np.cos(tilt), -np.sin(ang) * np.cos(tilt), -np.sin(tilt)])
    second = _unit(np.cross(long_ax, [0.0, 0.0, 1.0]))
    third = np.cross(long_ax, second)
    heart_rot = np.stack([long_ax, second, third], axis=1)
    z_dome_top = z_apex - lung_height
    # The heart rests on the central tendon, about half a dome height below the dome tops.
    heart_centre = np.array([14.0 * width + 0.25 * heart_axes[0] - 8, y_c - 0.28 * b_c,
                             z_dome_top - 0.5 * dome_h + 0.8 * heart_axes[2]])
    r_ao = patient.params["aorta_radius_mm"]
    base = heart_centre - long_ax * heart_axes[0] * 0.55
    aorta_pts = _catmull(np.array([
        base + [0, -5, 5],
        [-12.0, y_c - 0.45 * b_c + 8, 12.0],
        [-8.0, y_c - 0.32 * b_c, 32.0],
        [4.0, y_c - 0.05 * b_c, 42.0],
        [18.0, y_spine - 32.0, 36.0],
        [22.0, y_spine - 22.0, 10.0],
        [20.0, y_spine - 20.0, -80.0],
        [12.0, y_spine - 24.0, z_dome_top - 140.0],
    ]), step=5.0)
    n = len(aorta_pts)
    aorta_r = np.interp(np.arange(n), [0, n * 0.45, n - 1], [r_ao + 1.5, r_ao, r_ao - 2.0])
    hila = {
        "left": np.array([0.42 * a_c, y_c + 6.0, -12.0]),
        "right": np.array([-0.40 * a_c, y_c + 6.0, -18.0]),
    }
    return Anatomy(
        a_c=a_c, b_c=b_c, y_c=y_c, muscle_lat=10.0 * m_scale, muscle_ant=12.0 * m_scale,
        muscle_post=34.0 * m_scale, fat=fat, z_apex=z_apex, lung_height=lung_height, dome_h=dome_h,
        recess=32.0, inspiration=ins, y_spine=y_spine, vert_radius=vert_r, heart_centre=heart_centre,
        heart_axes=heart_axes, heart_rot=heart_rot, aorta_pts=aorta_pts, aorta_r=aorta_r, hila=hila,
        female=not male, age=patient.age,
    )
