"""``bench_backbone.compare_original_repo``: the side-by-side harness against the original code,
run here against a stand-in checkout (the real one is a download; this checks the plumbing: strict
weight transfer, outputs compared, every variant timed, ratios formed)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench = pytest.importorskip("bench_backbone")

# A stand-in for the original's dinov2/models/vision_transformer.py: its constructor signature and
# output keys, our own backbone underneath (so outputs must agree exactly).
STUB = '''
from voxelfm.models import ViTConfig
from voxelfm.models.vit import VisionTransformer3D


class DinoVisionTransformer(VisionTransformer3D):
    def __init__(self, patch_size, embed_dim, depth, num_heads, mlp_ratio, init_values, rope_base,
                 rope_rescale_coords, ffn_layer, qkv_bias, proj_bias, ffn_bias, num_register_tokens):
        super().__init__(ViTConfig(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                   mlp_ratio=mlp_ratio, layerscale=init_values, rope_base=rope_base,
                                   ffn_layer=ffn_layer, qkv_bias=qkv_bias, proj_bias=proj_bias,
                                   ffn_bias=ffn_bias, num_register_tokens=num_register_tokens))
'''


@pytest.fixture()
def stub_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    models = tmp_path / "repo" / "dinov2" / "models"
    models.mkdir(parents=True)
    (models.parent / "__init__.py").write_text("")
    (models / "__init__.py").write_text("")
    (models / "vision_transformer.py").write_text(STUB)
    monkeypatch.setattr(sys, "path", list(sys.path))  # build_original prepends the checkout
    for name in [m for m in sys.modules if m == "dinov2" or m.startswith("dinov2.")]:
        monkeypatch.delitem(sys.modules, name)
    yield tmp_path / "repo"
    for name in [m for m in sys.modules if m == "dinov2" or m.startswith("dinov2.")]:
        del sys.modules[name]


def test_compare_original_repo_times_every_variant(stub_repo: Path) -> None:
    result = bench.compare_original_repo(stub_repo, "vit-tiny", [8], repeats=2, threads=1,
                                         dtypes=("fp32", "bf16"), matmul_size=64)
    assert result["state_dict"]["unexpected"] == [] and result["state_dict"]["ours_not_in_original"] == []
    (row,) = result["rows"]
    assert row["tokens"] == 8 and row["grid"] == [2, 2, 2]
    assert set(row["cpu_s"]) == {"ours fp32", "original fp32", "ours bf16", "original bf16"}
    assert all(len(v) == 2 and min(v) > 0 for v in row["cpu_s"].values())
    assert set(row["ratios"]) == {"original fp32 / ours fp32", "original bf16 / ours bf16",
                                  "original fp32 / ours bf16", "ours fp32 / ours bf16"}
    out = row["outputs"]
    assert out["cls_max_abs"] == 0.0 and out["patch_max_abs"] == 0.0  # same code underneath
    assert out["ours_bf16_vs_fp32_cls_cosine"] > 0.99
    assert set(result["matmul_peak_before"]) == {"fp32_gflop_per_cpu_s", "bf16_gflop_per_cpu_s"}
