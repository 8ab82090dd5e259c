"""Branching trees (pulmonary arteries, veins, bronchi) grown from the hila into the lungs.

Trees grow generation by generation: each segment splits into two children whose radii follow
Murray-like ratios (0.80 and 0.68), rotated 20-40 degrees from the parent and biased outward from
the hilum so the tree fills the lung; a child stops when it would leave the pleural space or its
radius drops below the size preset's minimum. All candidate ends of a generation are tested with
one vectorised call of the lung shape function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Tree:
    """Segments of a tree: start/end points (N, 3), radii at both ends, generation index."""

    starts: np.ndarray
    ends: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    generation: np.ndarray

    def select(self, mask: np.ndarray) -> Tree:
        return Tree(self.starts[mask], self.ends[mask], self.r0[mask], self.r1[mask], self.generation[mask])


def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors perpendicular to the rows of ``d``."""
    v = rng.standard_normal(d.shape)
    v -= (v * d).sum(axis=1, keepdims=True) * d
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)


def grow_tree(rng: np.random.Generator, root: np.ndarray, direction: np.ndarray, radius,
              inside: Callable[[np.ndarray], np.ndarray], min_radius: float, max_generations: int = 14,
              outward_from: np.ndarray | None = None, n_candidates: int = 4) -> Tree:
    """Grow bifurcating trees from ``root`` (3,) or several roots (R, 3) with ``direction`` (R, 3)
    and ``radius`` (R,), all at once; ``inside(points) -> sdf`` (negative inside the lung).

    Each child tries up to ``n_candidates`` directions (its proposal first, then random
    deviations) and keeps the first whose end stays inside the lung, so branches bend away from
    the pleura instead of dying there.
    """
    starts, ends, r0s, r1s, gens = [], [], [], [], []
    pos = np.atleast_2d(np.asarray(root, dtype=np.float64))
    dirs = np.atleast_2d(np.asarray(direction, dtype=np.float64))
    pos = np.broadcast_to(pos, dirs.shape).copy()
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    rad = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(dirs),)).copy()
    centre = np.asarray(outward_from if outward_from is not None else pos.mean(axis=0), dtype=np.float64)
    first = True
    for gen in range(max_generations):
        n = len(pos)
        if n == 0:
            break
        length = rad * rng.uniform(4.0, 6.5, n) + 4.0
        if first:
            cand_dirs = dirs[None]
        else:
            # Candidate directions around the proposed one; the proposal itself is candidate 0.
            jitter = rng.standard_normal((n_candidates - 1, n, 3)) * 0.45
            cand_dirs = np.concatenate([dirs[None], dirs[None] + jitter], axis=0)
            cand_dirs /= np.linalg.norm(cand_dirs, axis=2, keepdims=True)
        cand_end = pos[None] + cand_dirs * length[None, :, None]
        sdf = inside(cand_end.reshape(-1, 3)).reshape(cand_end.shape[:2])
        # First feasible candidate (the proposal when possible): deepest-inside would pull every
        # branch back to the lung core instead of letting it reach the periphery.
        feasible = sdf < -0.6 * rad[None, :]
        best = np.where(feasible.any(axis=0), np.argmax(feasible, axis=0), np.argmin(sdf, axis=0))
        idx = np.arange(n)
        end, dirs, sdf_best = cand_end[best, idx], cand_dirs[best, idx], sdf[best, idx]
        keep = (sdf_best < -0.5 * rad) | first
        first = False
        if not np.any(keep):
            break
        pos, end, dirs, rad = pos[keep], end[keep], dirs[keep], rad[keep]
        rend = rad * 0.93
        starts.append(pos)
        ends.append(end)
        r0s.append(rad)
        r1s.append(rend)
        gens.append(np.full(len(pos), gen))
        # Bifurcate: major child (0.80 r) and minor child (0.68 r), rotated in a random plane.
        m = len(pos)
        perp = _perpendicular(dirs, rng)
        out = end - centre
        out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
        children_dir, children_r = [], []
        for sign, ratio, (lo, hi) in ((1.0, 0.80, (12, 28)), (-1.0, 0.68, (28, 45))):
            ang = np.deg2rad(rng.uniform(lo, hi, m))[:, None]
            d = np.cos(ang) * dirs + sign * np.sin(ang) * perp + 0.2 * out
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            children_dir.append(d)
            children_r.append(rend * ratio / 0.93)
        cd = np.vstack(children_dir)
        cr = np.concatenate(children_r)
        cp = np.vstack([end, end])
        alive = cr >= min_radius
        pos, dirs, rad = cp[alive], cd[alive], cr[alive]
    if not starts:
        empty = np.zeros((0, 3))
        return Tree(empty, empty, np.zeros(0), np.zeros(0), np.zeros(0, dtype=int))
    return Tree(np.vstack(starts), np.vstack(ends), np.concatenate(r0s), np.concatenate(r1s),
                np.concatenate(gens).astype(int))
