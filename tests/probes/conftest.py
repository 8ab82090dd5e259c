"""Synthetic frozen features with planted signals, shared by the probe tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voxelfm.core.geometry import Geometry
from voxelfm.probes.data import FeatureSet


def make_cohort(n: int = 300, dim: int = 32, grid: tuple[int, int, int] = (4, 4, 4), patch: int = 4,
                strength: float = 1.5, seed: int = 0, vary_grids: bool = False) -> tuple[FeatureSet, pd.DataFrame]:
    """Scans whose CLS and patch tokens carry known signals.

    * ``finding`` (0/1): shifts the CLS along one direction and one random patch token along another
      (so an MLP on CLS and a Q-Former on patches can both find it); ``noise`` is an unrelated 0/1 label.
    * ``grade`` (3 classes), ``age`` (linear in a CLS direction), ``time``/``event`` (Cox model on
      the same latent), and a nodule at a random patch whose token carries a marker; its world
      position (LPS mm) and normalised input-grid position are the localisation targets.
    """
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.normal(size=(dim, 6)))[0].T * np.sqrt(dim) * 0.5
    n_patients = int(n * 0.8)
    patient = np.sort(np.r_[np.arange(n_patients), rng.integers(0, n_patients, n - n_patients)])
    finding = (rng.random(n) < 0.4).astype(int)
    noise = (rng.random(n) < 0.4).astype(int)
    grade = rng.integers(0, 3, n)
    latent = rng.normal(size=n)
    age = 60 + 10 * latent
    hazard = np.exp(1.2 * latent)
    t_event = rng.exponential(1.0 / hazard)
    t_cens = rng.exponential(1.5, n)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    cls_rows, grids, pgeo, igeo, world, norm = [], [], [], [], [], []
    for i in range(n):
        g = tuple(np.array(grid) + (rng.integers(0, 2, 3) if vary_grids else 0))
        c = rng.normal(size=dim) + strength * (finding[i] * dirs[0] + latent[i] * dirs[1] + (grade[i] - 1) * dirs[2])
        tokens = rng.normal(size=(*g, dim)).astype(np.float32)
        k = tuple(rng.integers(0, s) for s in g)
        tokens[k] += strength * 2 * dirs[3]  # nodule marker
        if finding[i]:
            tokens[tuple(rng.integers(0, s) for s in g)] += strength * 2 * dirs[4]
        ig = Geometry(shape=tuple(s * patch for s in g), spacing=(2.0, 1.5, 1.5), origin=(-100.0 + i, -80.0, 30.0))
        pg = ig.subgrid(((patch - 1) / 2,) * 3, (patch,) * 3, g)
        world.append(pg.index_to_world(np.asarray(k, dtype=float)))
        norm.append((np.asarray(k) + 0.5) / np.asarray(g))
        cls_rows.append(c)
        grids.append(tokens)
        pgeo.append(pg)
        igeo.append(ig)
    ids = [f"scan{i:04d}" for i in range(n)]
    world = np.array(world)
    norm = np.array(norm)
    labels = pd.DataFrame({
        "scan_id": ids, "patient_id": [f"p{p:04d}" for p in patient], "finding": finding, "noise": noise,
        "grade": np.array(["mild", "moderate", "severe"])[grade], "age": age, "time": time, "event": event,
        "nodule_x_mm": world[:, 0], "nodule_y_mm": world[:, 1], "nodule_z_mm": world[:, 2],
        "nodule_z_norm": norm[:, 0], "nodule_y_norm": norm[:, 1], "nodule_x_norm": norm[:, 2],
    })
    # Patient-level split: every scan of a patient lands in the same split.
    u = np.random.default_rng(seed + 1).random(n_patients)
    split_of_patient = np.where(u < 0.6, "train", np.where(u < 0.8, "val", "test"))
    labels["split"] = split_of_patient[patient]
    feats = FeatureSet(ids, np.array(cls_rows, dtype=np.float32), grids, pgeo, igeo, model_id="synthetic", name="synthetic")
    return feats, labels


@pytest.fixture(scope="session")
def cohort() -> tuple[FeatureSet, pd.DataFrame]:
    return make_cohort()


@pytest.fixture(scope="session")
def cohort_factory():
    return make_cohort
