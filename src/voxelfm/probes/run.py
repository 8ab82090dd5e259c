"""``run_probe``: data → task → bootstrap CIs → run directory. The one entry point all callers use.

Run directory layout::

    RUN/config.yaml        resolved configuration (task, targets, head, data counts, ProbeConfig)
    RUN/history.jsonl      one JSON record per epoch (and per probe for per-label runs)
    RUN/probe.safetensors  the best-validation weights of every probe head (+ head specs in metadata)
    RUN/predictions.csv    validation and test predictions per scan
    RUN/metrics.json       {metric: {value, ci_low, ci_high, n, ...}} on the test split
    RUN/figures/*.png      metric bars with CIs, ROC curves / Kaplan-Meier plots where they apply
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voxelfm.core.atomic import atomic_save, atomic_write_text
from voxelfm.core.errors import ConfigError, DataError
from voxelfm.metrics.bootstrap import MetricCI, bootstrap_metrics
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import FeatureSet, ProbeData, assemble, read_labels, resolve_splits
from voxelfm.probes.tasks.common import TaskOutput

log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    """Outcome of one probe run; ``metrics`` maps names to :class:`MetricCI` on the test split."""

    task: str
    targets: list[str]
    head: str
    metrics: dict[str, MetricCI]
    predictions: pd.DataFrame
    history: list[dict[str, Any]]
    config: dict[str, Any]
    counts: dict[str, int]
    dropped: dict[str, int]
    output: TaskOutput
    out_dir: Path | None = None
    seconds: float = 0.0
    model_id: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def metrics_dict(self) -> dict[str, dict[str, Any]]:
        return {k: v.to_dict() for k, v in self.metrics.items()}

    def summary(self) -> pd.DataFrame:
        """One row per metric: value, CI and n."""
        return pd.DataFrame([{"metric": k, **v.to_dict()} for k, v in self.metrics.items()])


def _fit_task(task: str, data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    if task == "classification":
        from voxelfm.probes.tasks.classification import fit
    elif task == "regression":
        from voxelfm.probes.tasks.regression import fit
    elif task == "survival":
        from voxelfm.probes.tasks.survival import fit
    elif task == "knn":
        from voxelfm.probes.knn import fit
    elif task == "retrieval":
        from voxelfm.probes.retrieval import fit
    elif task == "localisation":
        from voxelfm.probes.tasks.localisation import fit
    elif task == "segmentation":
        from voxelfm.probes.tasks.segmentation import fit
    else:
        raise ConfigError(f"unknown task {task!r}")
    return fit(data, targets, config)


def _required_columns(task: str, targets: list[str], config: ProbeConfig) -> list[str]:
    if task == "survival":
        return targets if len(targets) == 2 else [config.time_column, config.event_column]
    if task == "localisation":
        return list(config.coordinate_columns)
    if task == "segmentation":
        return [config.label_path_column]
    if task == "retrieval":
        return []
    return list(targets)


def needs_patches(task: str, config: ProbeConfig | dict[str, Any] | None = None) -> bool:
    """Whether a probe of ``task`` with ``config`` reads patch tokens (else the CLS vectors suffice).

    The one answer every caller uses when loading features: localisation and segmentation always
    do; kNN and retrieval only with ``feature: mean_patch``; trained heads unless the head is the
    MLP on CLS (``feature`` does not apply to them).
    """
    if not isinstance(config, ProbeConfig):
        config = ProbeConfig.for_task(task, dict(config or {}))
    if task in ("localisation", "segmentation"):
        return True
    if task in ("knn", "retrieval"):
        return config.feature == "mean_patch"
    return config.head != "mlp"


def evaluate_output(output: TaskOutput, config: ProbeConfig) -> dict[str, MetricCI]:
    """Percentile-bootstrap CIs for every metric group of a task output."""
    groups = [("", output.metric_fn, output.eval_ids, output.eval_arrays), *output.more_evaluations]
    metrics: dict[str, MetricCI] = {}
    for prefix, fn, ids, arrays in groups:
        try:
            result = bootstrap_metrics(fn, *arrays, n_resamples=config.bootstrap, seed=config.bootstrap_seed)
        except ValueError as exc:
            # e.g. a test split holding a single class: say which split and why, not a numpy trace.
            raise DataError(f"cannot evaluate on the test split ({len(ids)} units): {exc}") from None
        metrics.update({f"{prefix}{k}": v for k, v in result.items()})
    return metrics


def load_features(store: Any, *, patches: bool, ids: list[str] | None = None) -> FeatureSet:
    """A FeatureSet from a FeatureSet (returned as is), an EmbeddingStore or a store path."""
    if isinstance(store, FeatureSet):
        if patches and not store.has_patches:
            store.require_patches("this probe")
        return store
    return FeatureSet.from_store(store, ids, patches=patches)


def run_probe(
    task: str,
    store: Any,
    labels: pd.DataFrame | str | os.PathLike[str],
    *,
    target: str | list[str] | None = None,
    head: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    config: ProbeConfig | dict[str, Any] | None = None,
    split_column: str | None = "split",
    split_dir: str | os.PathLike[str] | None = None,
    train_ids: list[str] | None = None,
    figures: bool = True,
) -> ProbeResult:
    """Train and evaluate one probe on frozen features and (optionally) write its run directory.

    ``store`` is an :class:`~voxelfm.embed.EmbeddingStore`, a path to one, or a
    :class:`FeatureSet`; ``labels`` a CSV path or DataFrame with a ``scan_id`` column. ``train_ids``
    restricts the training split (data-fraction sweeps); validation and test stay unchanged.
    """
    start = time.perf_counter()
    targets = [target] if isinstance(target, str) else list(target or [])
    overrides = dict(config) if isinstance(config, dict) else (config.to_dict() if config else {})
    if head is not None:
        overrides["head"] = head
    cfg = ProbeConfig.for_task(task, overrides)
    label_df = read_labels(labels)
    split = resolve_splits(label_df, split_column=split_column, split_dir=split_dir,
                           patient_column=cfg.patient_column, seed=cfg.train.seed)
    wanted = [sid for sid in label_df.index if isinstance(split.get(sid), str)]
    features = load_features(store, patches=needs_patches(task, cfg),
                             ids=None if isinstance(store, FeatureSet) else wanted)
    needed_splits = (cfg.retrieval_split,) if task == "retrieval" else ("train", "val", "test")
    data = assemble(features, label_df, split, _required_columns(task, targets, cfg), require_splits=needed_splits)
    if train_ids is not None:
        keep = set(map(str, train_ids))
        is_train = data.split == "train"
        drop = is_train & ~np.isin(np.asarray(data.ids), list(keep))
        data.split = np.where(drop, "unused", data.split).astype(object)
    from voxelfm.probes.trainer import torch_threads

    with torch_threads(cfg.train.threads):
        output = _fit_task(task, data, targets, cfg)
    metrics = evaluate_output(output, cfg)
    result = ProbeResult(
        task=task, targets=targets, head=cfg.head, metrics=metrics, predictions=output.predictions,
        history=output.history, config=cfg.to_dict(), counts=data.counts(), dropped=data.dropped, output=output,
        seconds=time.perf_counter() - start, model_id=features.model_id,
    )
    if out_dir is not None:
        write_run(result, out_dir, figures=figures)
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_run(result: ProbeResult, out_dir: str | os.PathLike[str], *, figures: bool = True) -> Path:
    """Write config, history, weights, predictions, metrics and figures of one run."""
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = {"task": result.task, "targets": result.targets, "head": result.head, "model_id": result.model_id,
                "counts": result.counts, "dropped": result.dropped, "seconds": round(result.seconds, 3),
                "probe": result.config}
    atomic_write_text(out / "config.yaml", yaml.safe_dump(_jsonable(resolved), sort_keys=False))
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(_jsonable(h)) + "\n" for h in result.history))
    atomic_write_text(out / "metrics.json", json.dumps(_jsonable(result.metrics_dict()), indent=1))
    atomic_save(out / "predictions.csv", lambda tmp: result.predictions.to_csv(tmp, index=False))
    if result.output.states:
        from safetensors.torch import save_file

        tensors = {f"{name}.{k}": v.detach().contiguous() for name, state in result.output.states.items()
                   for k, v in state.items()}
        meta = {"heads": json.dumps(_jsonable(result.output.head_specs)), "task": result.task,
                "model_id": str(result.model_id)}
        atomic_save(out / "probe.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    if result.output.extras.get("masks"):
        from voxelfm.probes.tasks.segmentation import write_masks

        write_masks(result.output.extras["masks"], out / "masks")
    if figures:
        from voxelfm.viz.plots import run_figures

        run_figures(result, out / "figures")
    result.out_dir = out
    return out


__all__ = ["ProbeResult", "evaluate_output", "load_features", "needs_patches", "run_probe", "write_run"]
