import numpy as np
import pytest
import torch

from voxelfm.core.errors import CheckpointError
from voxelfm.report.dataset import batch_tokens, pool_grid, vision_tokens
from voxelfm.report.projector import FeatureProjector, ProjectorConfig, grid_position_code


def _projector(**kw):
    cfg = ProjectorConfig(in_dim=8, out_dim=12, hidden_dim=24, num_queries=5, num_heads=4,
                          dropout=0.0, **kw)
    torch.manual_seed(0)
    return FeatureProjector(cfg).eval()


def test_output_shape_and_padding_invariance():
    proj = _projector()
    rng = np.random.default_rng(0)
    a = vision_tokens(rng.normal(size=8), rng.normal(size=(2, 2, 2, 8)))
    b = vision_tokens(rng.normal(size=8), rng.normal(size=(1, 3, 3, 8)))
    tokens, mask, pos = batch_tokens([a, b], 24, use_cls=True)
    assert tokens.shape == (2, 10, 8) and mask[0].sum() == 1 and not mask[1].any()
    out = proj(tokens, mask, pos)
    assert out.shape == (2, 1 + 5, 12)  # the summary token, then the queries
    alone = proj(*batch_tokens([a], 24, use_cls=True))
    assert torch.allclose(out[0], alone[0], atol=1e-5)


def test_position_code_distinguishes_patches():
    code = grid_position_code((2, 3, 4), 26)
    assert code.shape == (24, 26)
    assert torch.all(code[:, 24:] == 0)
    assert torch.unique(code, dim=0).shape[0] == 24


def test_pool_grid_caps_tokens():
    grid = np.ones((8, 8, 8, 3), dtype=np.float32)
    pooled = pool_grid(grid, 100)
    assert pooled.shape == (4, 4, 4, 3) and np.allclose(pooled, 1)
    assert pool_grid(grid, 1000).shape == grid.shape


def test_save_load_roundtrip(tmp_path):
    proj = _projector(position_encoding=False)
    proj.save(tmp_path)
    again = FeatureProjector.load(tmp_path)
    assert again.config == proj.config
    x = torch.randn(1, 4, 8)
    assert torch.allclose(proj(x), again.eval()(x))
    with pytest.raises(CheckpointError, match="missing"):
        FeatureProjector.load(tmp_path / "nowhere")


def test_schedule_warms_up_then_anneals_to_min_lr():
    from voxelfm.report.train import _schedule

    lrs = [_schedule(p, 1e-3, 1e-6, 0.1) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
    assert lrs[0] == pytest.approx(1e-6) and lrs[1] == pytest.approx(5.005e-4)
    assert lrs[2] == pytest.approx(1e-3) and lrs[3] == pytest.approx(5.005e-4)
    assert lrs[4] == pytest.approx(1e-6)
