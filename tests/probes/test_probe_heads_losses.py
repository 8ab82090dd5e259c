import numpy as np
import pytest
import torch
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from voxelfm.core.errors import ConfigError
from voxelfm.metrics.segmentation import dice_per_class
from voxelfm.probes.heads import AttentionLocaliser, MLPHead, QFormerHead, SegmentationDecoder
from voxelfm.probes.losses import cox_partial_likelihood
from voxelfm.probes.trainer import TrainConfig, lr_at, torch_threads, train


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_loss_fits_the_same_coefficients_as_sksurv(ties):
    rng = np.random.default_rng(0)
    n = 150
    x = rng.normal(size=(n, 2))
    t = np.round(rng.exponential(np.exp(-(x @ [0.8, -0.5]))), 1) + 0.1  # rounding creates many ties
    e = rng.random(n) < 0.7
    ref = CoxPHSurvivalAnalysis(ties=ties).fit(x, Surv.from_arrays(e, t)).coef_
    beta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta], max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12)
    xt, tt, et = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(e)

    def closure():
        opt.zero_grad()
        loss = cox_partial_likelihood(xt @ beta, tt, et, ties)
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(beta.detach().numpy(), ref, atol=2e-4)


def test_cox_loss_without_events_is_zero_and_rejects_unknown_ties():
    r = torch.randn(5, requires_grad=True)
    loss = cox_partial_likelihood(r, torch.arange(5.0), torch.zeros(5))
    loss.backward()
    assert loss.item() == 0.0
    with pytest.raises(ConfigError):
        cox_partial_likelihood(r, torch.arange(5.0), torch.ones(5), ties="exact")


def test_qformer_ignores_padded_tokens():
    torch.manual_seed(0)
    head = QFormerHead(16, 1, hidden_dim=32, num_queries=2, num_layers=2, use_positions=True).eval()
    x = torch.randn(1, 10, 16)
    pos = torch.rand(1, 10, 3)
    alone = head(x, pos=pos)
    padded = torch.cat([x, torch.randn(1, 5, 16) * 100], 1)
    pos_p = torch.cat([pos, torch.rand(1, 5, 3)], 1)
    mask = torch.arange(15).unsqueeze(0) < 10
    torch.testing.assert_close(head(padded, mask=mask, pos=pos_p), alone, atol=1e-5, rtol=1e-5)


def test_mlp_pools_tokens_with_mask_and_heads_validate():
    head = MLPHead(8, 3, hidden_dim=16).eval()
    x = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(head(x, mask=mask)[0], head(x[0, :2].mean(0, keepdim=True))[0])
    with pytest.raises(ConfigError):
        QFormerHead(10, 1, hidden_dim=30, num_heads=4)
    with pytest.raises(ConfigError):
        QFormerHead(8, 1, hidden_dim=16)(torch.randn(2, 8))


def test_localiser_predicts_inside_the_convex_hull_of_patch_centres():
    head = AttentionLocaliser(8, width=16).eval()
    pos = torch.rand(3, 20, 3) * 0.5 + 0.25
    out = head(torch.randn(3, 20, 8), pos=pos)
    assert out.shape == (3, 3)
    assert torch.all(out >= pos.min(1).values - 1e-6) and torch.all(out <= pos.max(1).values + 1e-6)


def test_decoder_overfits_one_volume():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    grid = torch.from_numpy(rng.normal(size=(1, 2, 2, 2, 16)).astype(np.float32))
    target = np.zeros((8, 8, 8), dtype=np.int64)
    target[1:5, 2:6, 1:4] = 1
    target[5:8, 1:4, 4:8] = 2
    y = torch.from_numpy(target).unsqueeze(0)
    dec = SegmentationDecoder(16, 3, target_shape=(8, 8, 8), hidden_dim=16, num_steps=2, min_channels=16)
    assert dec.step_sizes((2, 2, 2)) == [(5, 5, 5), (8, 8, 8)]
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    with torch_threads(1):
        for _ in range(120):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(dec(grid), y)
            loss.backward()
            opt.step()
    pred = dec.eval()(grid)[0].argmax(0).numpy()
    dice, _ = dice_per_class(pred, target, 3)
    assert np.all(dice > 0.9), dice
    # Per-scan output size can be overridden for grids of different size.
    assert dec(grid, target_shape=(6, 7, 8)).shape == (1, 3, 6, 7, 8)


def test_trainer_keeps_the_best_validation_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    scores = iter([0.2, 0.9, 0.1, 0.3])
    seen = []

    def validate(m):
        seen.append(m.weight.detach().clone())
        return {"auroc": next(scores)}

    def batches(rng):
        yield {"x": torch.randn(8, 1), "y": torch.randn(8, 1)}

    res = train(model, batches=batches, loss_fn=lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean(),
                validate=validate, monitor="auroc", mode="max", config=TrainConfig(epochs=4, noise_sigma=0.0, threads=1))
    assert res.best_epoch == 1 and res.best_score == 0.9
    torch.testing.assert_close(model.weight, seen[1])
    assert len(res.history) == 4


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_epochs=1, cosine_epochs=2)
    assert lr_at(0, 10, cfg) == pytest.approx(1e-4)
    assert lr_at(10, 10, cfg) == pytest.approx(1e-3)
    assert lr_at(20, 10, cfg) == pytest.approx(5.5e-4)
    assert lr_at(100, 10, cfg) == pytest.approx(1e-4)
    assert lr_at(5, 10, TrainConfig(lr=1e-3)) == 1e-3


@pytest.mark.parametrize("bias", [True, False])
def test_few_query_attention_equals_multihead_attention(bias):
    from voxelfm.probes.heads import few_query_attention

    torch.manual_seed(1)
    attn = torch.nn.MultiheadAttention(32, 4, batch_first=True, bias=bias).eval()
    q = torch.randn(3, 2, 32)
    kv = torch.randn(3, 50, 32)
    pad = torch.zeros(3, 50, dtype=torch.bool)
    pad[1, 40:] = True
    ref = attn(q, kv, kv, key_padding_mask=pad, need_weights=False)[0]
    torch.testing.assert_close(few_query_attention(attn, q, kv, pad, training=False), ref, atol=1e-5, rtol=1e-5)
