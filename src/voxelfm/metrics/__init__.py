"""voxelfm.metrics: task metrics and their confidence intervals (numpy/sklearn/sksurv only).

* :mod:`~voxelfm.metrics.bootstrap` — :func:`bootstrap_metrics` (percentile CIs for every metric of
  a metric function, shared resamples), :func:`bootstrap_ci`, :func:`paired_bootstrap`
  (difference of two backbones on the same test units), :class:`MetricCI`, :class:`DifferenceCI`.
* :mod:`~voxelfm.metrics.classification` — :func:`binary_metrics`, :func:`multilabel_metrics`,
  :func:`multiclass_metrics`, :func:`choose_threshold`, :func:`auroc`, :func:`average_precision`.
* :mod:`~voxelfm.metrics.regression` — :func:`regression_metrics` (MAE in units and SD units, R²).
* :mod:`~voxelfm.metrics.survival` — :func:`survival_metrics` (Harrell, Uno, time-dependent AUROC).
* :mod:`~voxelfm.metrics.retrieval` — :func:`label_match_trials`, :func:`same_patient_retrieval`,
  :func:`ranking_metrics`.
* :mod:`~voxelfm.metrics.localisation` — :func:`localisation_metrics`.
* :mod:`~voxelfm.metrics.segmentation` — :func:`dice_per_class`, :func:`aggregate_dice`.
"""

from voxelfm.metrics.bootstrap import (
    DifferenceCI,
    MetricCI,
    bootstrap_ci,
    bootstrap_metrics,
    paired_bootstrap,
)
from voxelfm.metrics.classification import (
    auroc,
    average_precision,
    binary_metrics,
    choose_threshold,
    multiclass_metrics,
    multilabel_metrics,
)
from voxelfm.metrics.localisation import localisation_metrics
from voxelfm.metrics.regression import regression_metrics
from voxelfm.metrics.retrieval import label_match_trials, ranking_metrics, same_patient_retrieval
from voxelfm.metrics.segmentation import aggregate_dice, dice_per_class
from voxelfm.metrics.survival import survival_metrics

__all__ = [
    "DifferenceCI",
    "MetricCI",
    "aggregate_dice",
    "auroc",
    "average_precision",
    "binary_metrics",
    "bootstrap_ci",
    "bootstrap_metrics",
    "choose_threshold",
    "dice_per_class",
    "label_match_trials",
    "localisation_metrics",
    "multiclass_metrics",
    "multilabel_metrics",
    "paired_bootstrap",
    "ranking_metrics",
    "regression_metrics",
    "same_patient_retrieval",
    "survival_metrics",
]
