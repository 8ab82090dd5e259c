import numpy as np
import pytest
from sklearn import metrics as skm

from voxelfm.metrics.localisation import localisation_metrics
from voxelfm.metrics.regression import regression_metrics
from voxelfm.metrics.segmentation import aggregate_dice, dice_per_class


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 100)
    p = y + rng.normal(0, 5, 100)
    m = regression_metrics(y, p, train_sd=10.0)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["mae_sd"] == pytest.approx(skm.mean_absolute_error(y, p) / 10.0)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    with pytest.raises(ValueError):
        regression_metrics(np.ones(5), np.ones(5), 1.0)


def test_localisation_metrics():
    true = np.zeros((4, 3))
    pred = np.array([[3.0, 4.0, 0.0], [0, 0, 0], [0, 0, 12.0], [1, 2, 2]])
    m = localisation_metrics(pred / 100, true / 100, pred, true, radius_mm=10)
    assert m["mean_error_mm"] == pytest.approx((5 + 0 + 12 + 3) / 4)
    assert m["mean_error_norm"] == pytest.approx(m["mean_error_mm"] / 100)
    assert m["hit_rate@10mm"] == pytest.approx(0.75)
    assert m["median_error_mm"] == pytest.approx(4.0)


def _reference_dice(pred, target, c):
    p, t = pred == c, target == c
    if p.sum() + t.sum() == 0:
        return np.nan
    return skm.f1_score(t.ravel(), p.ravel())


def test_dice_matches_f1_and_aggregates():
    rng = np.random.default_rng(0)
    scans = []
    for _ in range(3):
        target = rng.integers(0, 3, (6, 7, 8))
        pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 3, target.shape))
        scans.append((pred, target))
    # A scan where class 3 is absent from both prediction and truth must give NaN, not 1 or 0.
    dices, counts = [], []
    for pred, target in scans:
        d, c = dice_per_class(pred, target, num_classes=4)
        for k in (1, 2):
            assert d[k - 1] == pytest.approx(_reference_dice(pred, target, k), abs=1e-6)
        assert np.isnan(d[2])
        dices.append(d)
        counts.append(c)
    d = np.array(dices)
    c = np.array(counts)
    m = aggregate_dice(d, c, names=["a", "b", "c"])
    assert m["dice_macro"] == pytest.approx(np.mean([d[:, 0].mean(), d[:, 1].mean()]))
    w = c[:, :2]
    assert m["dice_micro"] == pytest.approx(np.sum(d[:, :2] * w) / w.sum())
    assert "dice/c" not in m and m["dice/a"] == pytest.approx(d[:, 0].mean())
