"""One pass, several stores: ``run_embeddings`` reads each scan once per spec and fills every target."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import voxelfm.embed.batch as batch_module
from conftest import SPEC, make_model
from voxelfm.core.errors import ConfigError
from voxelfm.embed import EmbeddingStore, EmbedTarget, collect_jobs, run_embedding, run_embeddings
from voxelfm.embed.histogram import MODEL_ID, HistogramBaseline
from voxelfm.models.backbones import NativeSpec, build_backbone

M3D_SETS = {"img_size": "[8,32,32]", "hidden_size": "24", "mlp_dim": "32", "num_layers": "1", "num_heads": "2"}
M3D_SPEC = NativeSpec("m3d-clip", {"size": [8, 32, 32]})


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts reads per (scan id, spec kind) made by the batch runner (in this process: workers=0)."""
    counts: Counter = Counter()
    real = batch_module._read_job

    def counting(job, spec):  # noqa: ANN001, ANN202
        counts[(job.scan_id, getattr(spec, "recipe", "voxelfm"))] += 1  # the spec object itself reaches the readers
        return real(job, spec)

    monkeypatch.setattr(batch_module, "_read_job", counting)
    return counts


def _targets(tmp_path: Path, model, other, m3d) -> list[EmbedTarget]:  # noqa: ANN001
    return [EmbedTarget(model, tmp_path / "a-3d"), EmbedTarget(other, tmp_path / "b-3d"),
            EmbedTarget(model, tmp_path / "a-25d", mode="2.5d"),
            EmbedTarget(HistogramBaseline(SPEC), tmp_path / "hist"),
            EmbedTarget(m3d, tmp_path / "m3d", spec=M3D_SPEC)]


def test_one_pass_reads_once_per_spec_and_fills_every_store(scans_dir: Path, tmp_path: Path, reads: Counter) -> None:
    model, other = make_model(0), make_model(1)
    m3d = build_backbone("m3d-clip", M3D_SETS, seed=0)
    jobs = collect_jobs([scans_dir])
    progress: list[tuple[str, str]] = []
    summaries = run_embeddings(_targets(tmp_path, model, other, m3d), jobs, workers=0,
                               on_progress=lambda scan_id, status: progress.append((scan_id, status)))
    # each scan read twice: once for the VoxelFM spec (4 targets), once for M3D's own recipe
    assert reads == Counter({(j.scan_id, kind): 1 for j in jobs for kind in ("voxelfm", "m3d-clip")})
    assert [(s.done, s.failed, s.skipped) for s in summaries] == [(3, 1, 0)] * 5
    assert sorted(progress) == [("broken", "failed"), ("case0", "ok"), ("case1", "ok"), ("case2", "ok")]
    for name, model_id, mode in (("a-3d", model.model_id, "3d"), ("a-25d", model.model_id, "2.5d"),
                                 ("b-3d", other.model_id, "3d"), ("hist", MODEL_ID, "3d"), ("m3d", m3d.model_id, "3d")):
        store = EmbeddingStore(tmp_path / name)
        assert store.ids() == ["case0", "case1", "case2"] and store.ids("failed") == ["broken"], name
        feats = store.get("case1")
        assert (feats.model_id, feats.mode) == (model_id, mode), name
    assert EmbeddingStore(tmp_path / "m3d").get("case0").spec.recipe == "m3d-clip"
    # the same features as a run of its own
    single = run_embedding(model, jobs, tmp_path / "alone", mode="2.5d", workers=0)
    assert single.done == 3
    for scan_id in ("case0", "case2"):
        np.testing.assert_array_equal(EmbeddingStore(tmp_path / "alone").get(scan_id).patch,
                                      EmbeddingStore(tmp_path / "a-25d").get(scan_id).patch)


def test_a_resumed_pass_reads_only_for_the_targets_that_still_need_a_scan(scans_dir: Path, tmp_path: Path,
                                                                          reads: Counter) -> None:
    model, other = make_model(0), make_model(1)
    m3d = build_backbone("m3d-clip", M3D_SETS, seed=0)
    jobs = [j for j in collect_jobs([scans_dir]) if j.scan_id != "broken"]
    targets = _targets(tmp_path, model, other, m3d)
    run_embeddings(targets[:4], jobs, workers=0)  # M3D not yet
    reads.clear()
    progress: list[tuple[str, str]] = []
    summaries = run_embeddings(targets, jobs, workers=0, on_progress=lambda s, status: progress.append((s, status)))
    assert reads == Counter({(j.scan_id, "m3d-clip"): 1 for j in jobs})  # the VoxelFM spec's stores are done
    assert [(s.done, s.skipped) for s in summaries] == [(0, 3)] * 4 + [(3, 0)]
    assert sorted(status for _, status in progress) == ["ok"] * 3
    reads.clear()
    again = run_embeddings(targets, jobs, workers=0, on_progress=lambda s, status: progress.append((s, status)))
    assert not reads and all(s.skipped == 3 for s in again) and progress[-3:] == [(j.scan_id, "skipped") for j in jobs]


def test_targets_that_cannot_work_are_refused_before_anything_runs(scans_dir: Path, tmp_path: Path) -> None:
    model = make_model(0)
    jobs = collect_jobs([scans_dir])
    with pytest.raises(ConfigError, match="same store twice"):
        run_embeddings([EmbedTarget(model, tmp_path / "s"), EmbedTarget(model, tmp_path / "s", mode="2.5d")], jobs)
    with pytest.raises(ConfigError, match="fixed-size input"):
        run_embeddings([EmbedTarget(HistogramBaseline(SPEC), tmp_path / "h", mode="2.5d")], jobs)
    with pytest.raises(ConfigError, match="needs a VoxelFM PreprocessSpec"):
        run_embeddings([EmbedTarget(HistogramBaseline(SPEC), tmp_path / "h", spec=M3D_SPEC)], jobs)
    assert not (tmp_path / "s").exists() or not EmbeddingStore(tmp_path / "s").ids(None)
