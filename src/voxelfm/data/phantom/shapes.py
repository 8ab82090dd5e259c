"""Signed distance functions (mm, negative inside) of the primitives the anatomy is built from.

Ellipsoids use the first-order distance ``(g - 1) / |grad g|`` with ``g`` the normalised radius:
exact at the surface, which is all the partial-volume blend needs. Tubes are chains of capsules
with linearly varying radius, unioned into one buffer.
"""

from __future__ import annotations

import numpy as np

from voxelfm.data.phantom.canvas import Canvas, Slices

BIG = np.float32(1e4)


def quadric_sdf(us: list[np.ndarray], axes: list) -> np.ndarray:
    """First-order distance to the surface ``sum (u_i / a_i)^2 = 1`` (``us`` are reused in place).

    ``f = sum (u_i/a_i)^2 - 1`` divided by ``|grad f|``: exact on the surface, monotone elsewhere,
    and cheaper (one square root) than normalising the radius first.
    """
    g2 = None
    grad2 = None
    for u, a in zip(us, axes, strict=True):
        inv = np.float32(1.0) / a
        u *= inv                      # u / a
        term = u * u
        g2 = term if g2 is None else np.add(g2, term, out=g2)
        u *= inv                      # u / a^2
        np.multiply(u, u, out=u)
        grad2 = u if grad2 is None else np.add(grad2, u, out=grad2)
    g2 -= np.float32(1.0)
    np.sqrt(grad2, out=grad2)
    grad2 *= np.float32(2.0)
    grad2 += np.float32(1e-6)
    g2 /= grad2
    return g2


def ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre, semiaxes, rotation=None) -> np.ndarray:
    """SDF of an ellipsoid; ``rotation`` (3x3, columns = ellipsoid axes in patient frame)."""
    u = [x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])]
    if rotation is not None:
        r = np.asarray(rotation, dtype=np.float32)
        u = [r[0, a] * u[0] + r[1, a] * u[1] + r[2, a] * u[2] for a in range(3)]
    return quadric_sdf(u, [np.float32(s) for s in semiaxes])


def ellipse_xy(x: np.ndarray, y: np.ndarray, centre, semiaxes) -> np.ndarray:
    """SDF of an elliptic cylinder along z (semiaxes may be arrays broadcast along z)."""
    ax = np.asarray(semiaxes[0], dtype=np.float32)
    ay = np.asarray(semiaxes[1], dtype=np.float32)
    u = np.subtract(x, np.float32(centre[0]), dtype=np.float32)
    v = np.subtract(y, np.float32(centre[1]), dtype=np.float32)
    if ax.ndim or ay.ndim:  # broadcast per-voxel semiaxes to the block shape
        shape = np.broadcast_shapes(u.shape, ax.shape, ay.shape)
        # u and v are fresh arrays (quadric_sdf writes into them): copy only to grow them.
        if u.shape != shape:
            u = np.broadcast_to(u, shape).copy()
        if v.shape != shape:
            v = np.broadcast_to(v, shape).copy()
    return quadric_sdf([u, v], [ax, ay])


def capsule(x: np.ndarray, y: np.ndarray, z: np.ndarray, a, b, ra: float, rb: float) -> np.ndarray:
    """SDF of a capsule from ``a`` to ``b`` with radius going linearly from ``ra`` to ``rb``."""
    a = np.asarray(a, dtype=np.float32)
    ab = np.asarray(b, dtype=np.float32) - a
    denom = float(ab @ ab) or 1e-6
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = (px * ab[0] + py * ab[1] + pz * ab[2]) / np.float32(denom)
    np.clip(t, 0.0, 1.0, out=t)
    px -= t * ab[0]
    py -= t * ab[1]
    pz -= t * ab[2]
    d = np.sqrt(px * px + py * py + pz * pz)
    d -= np.float32(ra) + t * np.float32(rb - ra)
    return d


def tube(canvas: Canvas, points: np.ndarray, radii: np.ndarray, pad_mm: float = 0.0) -> tuple[Slices, np.ndarray] | None:
    """Union SDF of the capsule chain through ``points`` (N, 3) with ``radii`` (N,) on its bbox."""
    points = np.asarray(points, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    return segments(canvas, points[:-1], points[1:], radii[:-1], radii[1:], pad_mm)


def segments(canvas: Canvas, starts: np.ndarray, ends: np.ndarray, r0: np.ndarray, r1: np.ndarray,
             pad_mm: float = 0.0) -> tuple[Slices, np.ndarray] | None:
    """Union SDF of independent capsules (a tree) over their common bounding box."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    r0, r1 = np.asarray(r0, float), np.asarray(r1, float)
    if len(starts) == 0:
        return None
    rmax = np.maximum(r0, r1)[:, None] + pad_mm
    lo = np.minimum(starts, ends) - rmax
    hi = np.maximum(starts, ends) + rmax
    outer = canvas.bbox(lo.min(axis=0), hi.max(axis=0))
    if outer is None:
        return None
    buf = np.full(tuple(s.stop - s.start for s in outer), BIG, dtype=np.float32)
    o0 = np.array([s.start for s in outer])
    b_start, b_stop = canvas.bboxes(lo, hi)
    for n in np.nonzero(np.all(b_stop > b_start, axis=1))[0]:
        (k0, j0, i0), (k1, j1, i1) = b_start[n], b_stop[n]
        sl = (slice(k0, k1), slice(j0, j1), slice(i0, i1))
        x, y, z = canvas.coords(sl)
        d = capsule(x, y, z, starts[n], ends[n], r0[n], r1[n])
        (a0, b0, c0), (a1, b1, c1) = b_start[n] - o0, b_stop[n] - o0
        local = buf[a0:a1, b0:b1, c0:c1]
        np.minimum(local, d, out=local)
    return outer, buf


def splat_segments(canvas: Canvas, starts: np.ndarray, ends: np.ndarray, r0: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Volume fraction (0-1, full grid) of thin tubes, by trilinear splatting of their volume.

    For tubes thinner than a voxel the partial-volume value is simply the tube volume inside each
    voxel, so points sampled every half voxel along each segment deposit ``pi r^2 dl`` into their
    8 neighbouring voxels. Orders of magnitude cheaper than SDFs for thousands of small branches.
    """
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    out = np.zeros(canvas.shape, dtype=np.float32)
    if len(starts) == 0:
        return out
    length = np.linalg.norm(ends - starts, axis=1)
    step = 0.5 * canvas.h
    n_pts = np.maximum(1, np.ceil(length / step).astype(int))
    seg = np.repeat(np.arange(len(starts)), n_pts)
    first = np.cumsum(n_pts) - n_pts
    t = (np.arange(n_pts.sum()) - first[seg] + 0.5) / n_pts[seg]
    pts = starts[seg] + t[:, None] * (ends - starts)[seg]
    r = r0[seg] + t * (r1 - r0)[seg]
    vol = np.pi * r * r * (length / n_pts)[seg] / float(np.prod(canvas.geometry.spacing))
    idx = canvas.geometry.world_to_index(canvas.pose.to_world(pts))  # (k, j, i) continuous
    base = np.floor(idx).astype(np.int64)
    frac = idx - base
    shape = np.array(canvas.shape)
    flat_all, w_all = [], []
    for corner in range(8):
        off = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        pos = base + off
        w = np.prod(np.where(off == 1, frac, 1.0 - frac), axis=1) * vol
        ok = np.all((pos >= 0) & (pos < shape), axis=1)
        flat_all.append(np.ravel_multi_index(pos[ok].T, canvas.shape))
        w_all.append(w[ok])
    dens = np.bincount(np.concatenate(flat_all), weights=np.concatenate(w_all), minlength=out.size)
    out.ravel()[:] = np.minimum(dens, 1.0)
    return out
