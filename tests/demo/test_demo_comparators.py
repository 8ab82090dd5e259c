"""``voxelfm demo --backbones``: comparator backbones saved at random init, each embedded through its own
preprocessing recipe in the demo's one embedding pass, and shown in results.json and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.core.errors import ConfigError
from voxelfm.core.geometry import Geometry
from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext, get_config
from voxelfm.demo.document import compose_report
from voxelfm.demo.results import validate_results
from voxelfm.demo.stages.embed import EmbedStage
from voxelfm.embed import EmbeddingStore
from voxelfm.embed.histogram import MODEL_ID as HISTOGRAM_ID
from voxelfm.io import write_nifti
from voxelfm.metrics import DifferenceCI, MetricCI
from voxelfm.models import ViTConfig, build_model, load_model, save_model
from voxelfm.preprocess import PreprocessSpec
from voxelfm.viz.result_rows import ResultRow

COMPARATORS = ("m3d-clip", "radfm")


def _tiny_demo_inputs(out: Path) -> None:
    """What the embed stage reads: a cohort (labels.csv + scans) and the two VoxelFM model directories."""
    cohort = layout.cohort_dir(out)
    rng = np.random.default_rng(0)
    rows = ["scan_id,path"]
    for i in range(2):
        array = (rng.normal(0, 150, (20, 36, 40)) - 300).astype(np.float32)
        write_nifti(array, Geometry(array.shape, (6.0, 5.0, 5.0), origin=(0.0, 0.0, 100.0 * i)),
                    cohort / "scans" / f"s{i}.nii.gz")
        rows.append(f"s{i},scans/s{i}.nii.gz")
    (cohort / "labels.csv").write_text("\n".join(rows) + "\n")
    spec = PreprocessSpec(patch_size=8, max_patches=27)
    config = ViTConfig(embed_dim=24, depth=1, num_heads=2, patch_size=8, num_register_tokens=1)
    for seed, name in enumerate(layout.MODEL_BACKBONES):
        save_model(build_model(config, seed=seed, spec=spec), layout.model_dir(out, name), spec=spec)


def test_the_embed_stage_adds_comparators_through_their_own_recipes(tmp_path: Path) -> None:
    ctx = DemoContext(out=tmp_path, config=get_config("tiny", COMPARATORS))
    _tiny_demo_inputs(tmp_path)
    stage = EmbedStage()
    counts = stage.run(ctx)
    assert stage.check(ctx).ok, stage.check(ctx).problems
    assert set(counts) == {layout.store_dir(tmp_path, b, m).name for b, m in layout.embeddings(ctx.config)}
    assert all(c == {"done": 2, "skipped": 0, "failed": 0} for c in counts.values())
    for name in COMPARATORS:
        model = load_model(layout.model_dir(tmp_path, name))
        assert model.name == name and model.spec.recipe == name  # saved with its own NativeSpec
        feats = EmbeddingStore(layout.store_dir(tmp_path, name)).get("s0")
        assert feats.model_id == model.model_id and feats.spec.recipe == name
        assert feats.cls.shape == (model.embed_dim,)
    baseline = EmbeddingStore(layout.store_dir(tmp_path, layout.BASELINE)).get("s1")
    pretrained = EmbeddingStore(layout.store_dir(tmp_path, "pretrained")).get("s1")
    assert baseline.model_id == HISTOGRAM_ID and baseline.patch.shape[:3] == pretrained.patch.shape[:3]
    # resumed: every store is complete, nothing is embedded again
    assert all(c["skipped"] == 2 for c in stage.run(ctx).values())


def test_comparators_are_off_by_default_and_named_ones_must_exist() -> None:
    assert get_config("tiny").embed.backbones == ()
    assert layout.backbone_names(get_config("small", ["radfm"]))[-1] == "radfm"
    with pytest.raises(ConfigError, match="unknown comparator backbone"):
        get_config("tiny", ["resnet"])
    result = CliRunner().invoke(app, ["demo", "--out", "unused", "--size", "tiny", "--backbones", "m3d-clip,nope"])
    assert result.exit_code != 0 and "unknown comparator backbone(s) 'nope'" in result.output


def test_comparator_rows_reach_the_report() -> None:
    row = ResultRow("classification", "3 findings", "macro AUROC", True,
                    {"pretrained": MetricCI(0.7, 0.6, 0.8, 20), "m3d-clip": MetricCI(0.55, 0.4, 0.7, 20)},
                    {"m3d-clip − pretrained": DifferenceCI(-0.15, -0.3, 0.0, 0.04, 20, 0.55, 0.7)},
                    detail="difference: m3d-clip − pretrained")
    results = {"size": "tiny", "comparators": [row.to_dict()], "backbones": {"m3d-clip": {"model_id": "abc"}}}
    html = compose_report(results, {}).render()
    table = html.split('id="comparators-table"')[1].split("</table>")[0]
    assert "m3d-clip" in table and "0.55" in table and "difference: m3d-clip − pretrained" in table
    empty = compose_report({"size": "tiny"}, {}).render().split('<section id="comparators">')[1].split("</section>")[0]
    assert "--backbones" in empty  # off by default: the section says how to add them


@pytest.mark.slow
def test_tiny_demo_with_comparators(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--size", "tiny", "--device", "cpu",
                                      "--backbones", ",".join(COMPARATORS)])
    assert result.exit_code == 0, result.output
    results = json.loads(layout.results_json(out).read_text())
    assert validate_results(results) == []
    assert set(COMPARATORS) <= set(results["backbones"])
    rows = [ResultRow.from_dict(r) for r in results["comparators"]]
    for name in COMPARATORS:
        mine = [r for r in rows if name in r.values]
        assert {r.category for r in mine} >= {"classification", "regression", "retrieval", "segmentation"}
        assert all(set(r.values) == {"pretrained", name} for r in mine)
    html = layout.report_html(out).read_text()
    table = html.split('id="comparators-table"')[1].split("</table>")[0]
    assert all(name in table for name in COMPARATORS)
