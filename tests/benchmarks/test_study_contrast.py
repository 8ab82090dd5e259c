"""The recipe study's direct comparison of two finished (arm, steps) groups
(benchmarks/study_pretrain.py ``contrast``): pretrained(A) - pretrained(B) over common seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
study = pytest.importorskip("study_pretrain")
PROBE = study.PROBES["fold-rank"]


def _write_run(work: Path, arm: str, steps: int, seed: int, y: np.ndarray, score: np.ndarray,
               probe: str = PROBE) -> None:
    run = work / "runs" / f"{arm}_{steps}_s{seed}"
    run.mkdir(parents=True)
    rng = np.random.default_rng(100 + seed)
    arrays = {"y": y, "info": np.array(json.dumps({"arm": arm, "seed": seed, "probe": probe}))}
    for feature in study.FEATURES:
        arrays[f"pretrained|{feature}"] = score
        arrays[f"random|{feature}"] = rng.normal(size=y.shape)
    np.savez(run / "scores.npz", **arrays)


@pytest.fixture()
def study_dirs(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(60, 2))
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    pd.DataFrame({"patient_id": np.arange(60)}).to_csv(cohort / "labels.csv", index=False)
    return tmp_path / "work", cohort, y


def test_longer_run_that_ranks_perfectly_beats_a_noise_run_on_common_seeds(study_dirs):
    work, cohort, y = study_dirs
    rng = np.random.default_rng(1)
    for seed in (0, 1, 2):
        _write_run(work, "rt_ibot", 1000, seed, y, y + 0.1 * rng.normal(size=y.shape))
    for seed in (0, 1):
        _write_run(work, "rt_ibot", 200, seed, y, rng.normal(size=y.shape))
    _write_run(work, "rt_ibot", 200, 2, y, y.astype(float), probe="another-protocol")  # left out
    out = study.contrast(work, "rt_ibot:1000", "rt_ibot:200", cohort, PROBE)
    assert out["seeds"] == [0, 1]
    cls = out["cls"]
    assert cls["rt_ibot:1000"] == pytest.approx(1.0)
    assert 0.3 < cls["difference"] < 0.7
    assert cls["ci95"][0] > 0.2 and cls["p"] < 0.01
    assert len(out["per_seed_cls_difference"]) == 2


def test_groups_without_a_common_seed_are_refused(study_dirs):
    work, cohort, y = study_dirs
    _write_run(work, "rt_ibot", 1000, 0, y, y.astype(float))
    _write_run(work, "rt_ibot", 200, 1, y, y.astype(float))
    with pytest.raises(SystemExit, match="no seed"):
        study.contrast(work, "rt_ibot:1000", "rt_ibot:200", cohort, PROBE)
