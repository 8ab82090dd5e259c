"""``voxelfm evaluate`` with several backbones: one column per backbone, paired differences vs a reference.

A tiny synthetic cohort is embedded by VoxelFM (vit-tiny) and two comparators (reduced Merlin and
RadFM, random weights), then one suite compares them. Slow (about a minute on 2 shared cores);
CI still runs it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.models import build_model, save_model
from voxelfm.models.backbones import NativeSpec, build_backbone
from voxelfm.preprocess import PreprocessSpec


@pytest.mark.slow
def test_evaluate_suite_with_three_backbones(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["phantom", str(tmp_path / "cohort"), "--n", "12", "--seed", "0", "--format", "nifti",
                              "--size", "tiny"])
    assert res.exit_code == 0, res.output
    models = {
        "voxelfm": (build_model("vit-tiny", seed=0), PreprocessSpec(max_patches=256)),
        "merlin": (build_backbone("merlin", {"layers": "[1,1,1,1]", "width": "4"}, seed=0),
                   NativeSpec("merlin", {"size_xyz": [64, 64, 32], "spacing_xyz": [4.0, 4.0, 6.0]})),
        "radfm": (build_backbone("radfm", {"image_size": "64", "image_patch_size": "16", "frames": "64", "dim": "24",
                                           "depth": "1", "heads": "2", "dim_head": "8", "mlp_dim": "32"}, seed=0),
                  NativeSpec("radfm", {"size_hw": [64, 64], "max_depth": 16})),
    }
    stores = {}
    for name, (model, spec) in models.items():
        save_model(model, tmp_path / "models" / name, spec=spec)
        stores[name] = str(tmp_path / "stores" / name)
        res = runner.invoke(app, ["embed", str(tmp_path / "cohort" / "labels.csv"), "--model", str(tmp_path / "models" / name),
                                  "--out", stores[name], "--workers", "0", "--no-progress"])
        assert res.exit_code == 0, res.output
    suite = {
        "labels": str(tmp_path / "cohort" / "labels.csv"),
        "stores": stores,
        "reference": "voxelfm",
        "config": {"bootstrap": 30, "train": {"epochs": 2, "threads": 1}},
        "tasks": [{"name": "findings", "task": "classification", "targets": ["lung_opacity", "pleural_effusion"],
                   "heads": ["mlp", "qformer"]}],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    res = runner.invoke(app, ["evaluate", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(tmp_path / "ev" / "summary.csv")
    assert set(summary["backbone"]) == {"voxelfm", "merlin", "radfm"}
    assert set(summary["head"]) == {"mlp", "qformer"}
    diffs = pd.read_csv(tmp_path / "ev" / "differences.csv")
    assert set(diffs["reference"]) == {"voxelfm"} and set(diffs["backbone"]) == {"merlin", "radfm"}
