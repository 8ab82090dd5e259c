"""``bench_embed.compare_dtypes``: ``voxelfm embed`` end to end per ``--dtype``, each run a child
process with its stages timed, ratios to the first dtype and CLS cosines between the stores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench = pytest.importorskip("bench_embed")


@pytest.mark.slow
def test_compare_dtypes_times_every_stage_of_each_run(tmp_path: Path) -> None:
    from voxelfm.models import build_model, save_model
    from voxelfm.preprocess import PreprocessSpec

    bench.write_cohort(tmp_path / "cohort", 2, (16, 40, 40))
    save_model(build_model("vit-tiny", seed=0, spec=PreprocessSpec(max_patches=27)), tmp_path / "model")
    lines: list[str] = []
    result = bench.compare_dtypes(tmp_path / "cohort", tmp_path / "model", tmp_path, ("fp32", "bf16"),
                                  rounds=2, threads=1, workers=0, log=lines.append)
    runs = result["runs"]
    assert [(r["round"], r["dtype"]) for r in runs] == [(0, "fp32"), (0, "bf16"), (1, "bf16"), (1, "fp32")]
    for run in runs:
        assert run["threads"] == 1 and run["wall_s"] > 0 and run["cpu_s"] > 0 and run["auto_line"] is None
        stages = run["stages"]
        assert set(stages) == {"load_model", "read_preprocess", "forward", "store_write"}
        assert stages["forward"]["calls"] == stages["store_write"]["calls"] == len(stages["forward"]["per_call"]) == 2
        assert sum(s["wall_s"] for s in stages.values()) < run["wall_s"]
    assert set(result["ratios"]) == {"fp32 / bf16"} and set(result["ratios"]["fp32 / bf16"]) == {"wall_s", "cpu_s"}
    cosines = result["cls_cosine"]["bf16"]
    assert len(cosines) == 2 and min(cosines.values()) > 0.99
    assert len(result["patches"]) == 2 and all(0 < n <= 27 for n in result["patches"].values())
    assert len(lines) == 4 and lines[0].startswith("round 0 fp32:")
