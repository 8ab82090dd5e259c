import numpy as np
import pandas as pd
import pytest
from PIL import Image

from voxelfm.core.errors import InputValidationError
from voxelfm.viz.plots import (
    fraction_curves,
    head_comparison,
    kaplan_meier,
    metric_bars,
    roc_curves,
)


def _is_png(path, min_size=100):
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= min_size
        return np.asarray(im.convert("L")).std() > 0  # not a blank canvas


def test_metric_bars_in_fig2_layout(tmp_path):
    rows = []
    for cat, task, metric in (("classification", "nodule", "auroc"), ("regression", "age", "r2"),
                              ("survival", "os", "c_index_harrell")):
        for b, v in (("pretrained", 0.8), ("random", 0.6)):
            rows.append({"category": cat, "task": task, "metric": metric, "backbone": b, "value": v,
                         "ci_low": v - 0.05, "ci_high": v + np.nan if b == "random" else v + 0.05})
    assert _is_png(metric_bars(pd.DataFrame(rows), tmp_path / "bars.png", title="t"))
    with pytest.raises(InputValidationError, match="ci_low"):
        metric_bars(pd.DataFrame([{"task": "a", "metric": "m", "value": 1.0}]), tmp_path / "x.png")


def test_fraction_head_roc_and_km_figures(tmp_path):
    rng = np.random.default_rng(0)
    frac = pd.DataFrame([{"fraction": f, "seed": s, "backbone": b, "metric": "auroc",
                          "value": 0.6 + 0.2 * f + rng.normal(0, 0.02), "ci_low": 0.5, "ci_high": 0.9}
                         for f in (0.2, 0.5, 1.0) for s in (0, 1) for b in ("pretrained", "random")])
    assert _is_png(fraction_curves(frac, tmp_path / "frac.png", metric="auroc"))
    with pytest.raises(InputValidationError):
        fraction_curves(frac, tmp_path / "none.png", metric="r2")
    heads = pd.DataFrame([{"task": t, "head": h, "metric": "auroc", "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
                          for t in ("a", "b") for h, v in (("mlp", 0.7), ("qformer", 0.8))])
    assert _is_png(head_comparison(heads, tmp_path / "heads.png"))
    y = rng.integers(0, 2, 100)
    assert _is_png(roc_curves({"good": (y, y + rng.normal(0, 0.5, 100)), "one-class": (np.ones(5), np.ones(5))},
                              tmp_path / "roc.png"))
    t = rng.exponential(1, 80)
    assert _is_png(kaplan_meier(t, rng.integers(0, 2, 80), np.where(t > 1, "low", "high"), tmp_path / "km.png"))
