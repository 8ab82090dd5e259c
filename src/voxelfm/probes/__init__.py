"""voxelfm.probes: lightweight probes on frozen features, with bootstrap CIs (docs/original.md §4).

Entry points:

* :func:`run_probe(task, store, labels, *, target, head, out_dir, config) <voxelfm.probes.run.run_probe>`
  → :class:`ProbeResult` (``.metrics``: name → :class:`~voxelfm.metrics.MetricCI`); tasks:
  ``classification`` (binary / multi-label / multi-class), ``knn``, ``regression``, ``survival``,
  ``retrieval``, ``localisation``, ``segmentation``; heads ``mlp`` (CLS) and ``qformer`` (patches).
* :func:`compare_stores` (several backbones, paired differences), :func:`fraction_sweep` (nested
  data fractions × seeds), :func:`run_suite` (``voxelfm evaluate SUITE.yaml``; its probe jobs and
  paired bootstraps on ``workers`` processes, :mod:`voxelfm.core.parallel`); its unit of work,
  :class:`~voxelfm.probes.jobs.ProbeJob` with :func:`~voxelfm.probes.jobs.run_jobs`, also runs the
  demo's probes.
* Comparisons: :func:`~voxelfm.probes.compare.paired_differences` (two runs),
  :func:`~voxelfm.probes.compare.differences_between` (named pairs of named runs, on worker
  processes; what ``evaluate`` and the demo call).
* Data: :class:`FeatureSet` (in-memory features; ``FeatureSet.from_store``, or
  :func:`~voxelfm.probes.data.cached_features` to read a store once per process), :func:`read_labels`,
  :func:`resolve_splits`; :class:`RetrievalIndex` (FAISS, build once / query).
* Building blocks: :class:`ProbeConfig`, :class:`TrainConfig`, :func:`train`, heads
  (:class:`MLPHead`, :class:`QFormerHead`, :class:`AttentionLocaliser`, :class:`SegmentationDecoder`),
  :func:`cox_partial_likelihood`.
"""

from voxelfm.probes.compare import Comparison, compare_stores
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import FeatureSet, ProbeData, read_labels, resolve_splits
from voxelfm.probes.fractions import fraction_sweep, nested_subsets
from voxelfm.probes.heads import AttentionLocaliser, MLPHead, QFormerHead, SegmentationDecoder
from voxelfm.probes.losses import cox_partial_likelihood
from voxelfm.probes.retrieval import RetrievalIndex
from voxelfm.probes.run import ProbeResult, run_probe
from voxelfm.probes.suite import Suite, run_suite
from voxelfm.probes.trainer import TrainConfig, train

__all__ = [
    "AttentionLocaliser",
    "Comparison",
    "FeatureSet",
    "MLPHead",
    "ProbeConfig",
    "ProbeData",
    "ProbeResult",
    "QFormerHead",
    "RetrievalIndex",
    "SegmentationDecoder",
    "Suite",
    "TrainConfig",
    "compare_stores",
    "cox_partial_likelihood",
    "fraction_sweep",
    "nested_subsets",
    "read_labels",
    "resolve_splits",
    "run_probe",
    "run_suite",
    "train",
]
