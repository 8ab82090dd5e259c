import numpy as np
import pytest
from sklearn import metrics as skm

from voxelfm.core.errors import InputValidationError
from voxelfm.metrics.classification import (
    auroc,
    average_precision,
    balanced_accuracy_at,
    binary_metrics,
    choose_threshold,
    f1_at,
    hanley_mcneil_ci,
    metrics_at_thresholds,
    multiclass_metrics,
    multilabel_metrics,
)


@pytest.fixture
def binary():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    # Rounded scores create many ties, which is where hand-written AUROC/AP usually go wrong.
    s = np.round(1 / (1 + np.exp(-(y + rng.normal(0, 1.2, 300)))), 1)
    return y, s


def test_binary_metrics_match_sklearn(binary):
    y, s = binary
    assert auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert f1_at(y, s, 0.5) == pytest.approx(skm.f1_score(y, s >= 0.5))
    assert balanced_accuracy_at(y, s, 0.3) == pytest.approx(skm.balanced_accuracy_score(y, s >= 0.3))
    m = binary_metrics(y, s, threshold=0.7)
    assert m["f1@val"] == pytest.approx(skm.f1_score(y, s >= 0.7))


def test_threshold_choice_maximises_validation_f1(binary):
    y, s = binary
    thr = choose_threshold(y, s, "f1")
    best = max(skm.f1_score(y, s >= t) for t in np.unique(s))
    assert skm.f1_score(y, s >= thr) == pytest.approx(best)
    thr_j = choose_threshold(y, s, "youden")
    fpr, tpr, thresholds = skm.roc_curve(y, s)
    assert thr_j == pytest.approx(thresholds[np.argmax(tpr - fpr)])


def test_multilabel_macro_is_mean_of_labels():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (200, 3))
    s = rng.random((200, 3)) + 0.3 * y
    m = multilabel_metrics(y, s, names=["a", "b", "c"])
    expected = np.mean([skm.roc_auc_score(y[:, j], s[:, j]) for j in range(3)])
    assert m["macro/auroc"] == pytest.approx(expected)
    assert m["b/auprc"] == pytest.approx(skm.average_precision_score(y[:, 1], s[:, 1]))
    assert m["macro/auroc"] == pytest.approx(skm.roc_auc_score(y, s, average="macro"))


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4))
    logits[np.arange(400), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = multiclass_metrics(y, p)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, p.argmax(1), average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p.argmax(1)))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    onehot = np.eye(4)[y]
    assert m["auprc"] == pytest.approx(skm.average_precision_score(onehot, p, average="macro"))


def test_undefined_and_invalid_inputs():
    with pytest.raises(ValueError):
        auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputValidationError):
        auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputValidationError):
        auroc([0, 1], [0.1, np.nan])


def test_hanley_mcneil_interval_contains_estimate():
    low, high = hanley_mcneil_ci(0.8, 50, 150)
    assert low < 0.8 < high and low >= 0 and high <= 1


def test_metrics_at_thresholds_uses_each_targets_own_threshold() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(40, 2))
    p = rng.random((40, 2))
    one = metrics_at_thresholds(["a"], {"a": 0.3})
    assert one(y[:, :1], p[:, :1]) == binary_metrics(y[:, 0], p[:, 0], 0.3)
    both = metrics_at_thresholds(["a", "b"], {"a": 0.3, "b": 0.8})
    assert both(y, p) == multilabel_metrics(y, p, np.array([0.3, 0.8]), ["a", "b"])
    assert both(y, p)["b/f1@val"] == binary_metrics(y[:, 1], p[:, 1], 0.8)["f1@val"]
