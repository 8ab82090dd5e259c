"""``voxelfm evaluate SUITE.yaml``: many probes, heads and backbones in one run.

Suite file::

    labels: cohort/labels.csv          # relative paths resolve against the suite file
    split_column: split                # or split_dir: splits/  (train.csv, val.csv, test.csv)
    stores:                            # name -> embedding store; the last is the reference
      pretrained: stores/pretrained
      random: stores/random
    reference: random                  # differences are <store> - reference (paired bootstrap)
    config: {bootstrap: 1000}          # defaults for every task (ProbeConfig keys, train: {...})
    tasks:
      - {name: findings, task: classification, targets: [lung_nodule, emphysema], heads: [mlp, qformer]}
      - {name: age, task: regression, targets: [age]}
      - {name: survival, task: survival, config: {horizons: [1, 3]}}
      - {name: nodule, task: classification, targets: [lung_nodule], heads: [qformer],
         fractions: [0.2, 0.5, 1.0], fraction_seeds: [0, 1, 2]}

Output: ``DIR/<name>/<head>/<store>/`` run directories, ``DIR/summary.csv`` (every metric with its
CI), ``DIR/differences.csv``, ``DIR/summary.json`` and ``DIR/fractions_<name>_<head>.csv``. The
readable report (``DIR/report.html`` and the figures in ``DIR/figures/``) is drawn from these tables by
:func:`voxelfm.viz.results_report.write_suite_report`, which ``voxelfm evaluate`` calls afterwards.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.config_check import check_known_keys
from voxelfm.core.errors import ConfigError, VoxelFMError, located
from voxelfm.core.readers import read_yaml
from voxelfm.probes.config import DEFAULT_HEADS, TASKS
from voxelfm.probes.data import FeatureSet

log = logging.getLogger(__name__)

#: Metric shown for each task in the summary figures (the paper's headline metric per category).
HEADLINE: dict[str, list[str]] = {
    "classification": ["macro/auroc", "auroc"],
    "knn": ["macro/auroc", "auroc"],
    "regression": ["r2", "mae_sd"],
    "survival": ["c_index_harrell"],
    "retrieval": ["macro/recall@10", "same_patient/recall@10"],
    "localisation": ["mean_error_mm", "mean_error_norm"],
    "segmentation": ["dice_macro"],
}


@dataclass
class TaskEntry:
    name: str
    task: str
    targets: list[str] = field(default_factory=list)
    heads: list[str | None] = field(default_factory=lambda: [None])
    config: dict[str, Any] = field(default_factory=dict)
    fractions: list[float] = field(default_factory=list)
    fraction_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass
class Suite:
    labels: str
    stores: dict[str, str]
    tasks: list[TaskEntry]
    split_column: str | None = "split"
    split_dir: str | None = None
    reference: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Suite:
        """Parse and check a suite YAML; relative paths resolve against its folder."""
        path = Path(path)
        raw = read_yaml(path, what="suite file", error=ConfigError) or {}
        return cls.from_dict(raw, base=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path | None = None, source: str = "suite") -> Suite:
        base = base or Path.cwd()
        if not isinstance(raw, dict):
            raise ConfigError(located(source, f"a suite must be a mapping, got {type(raw).__name__}"))
        check_known_keys(raw, ("labels", "stores", "tasks", "split_column", "split_dir", "reference", "config"),
                         what="suite key", source=source)
        for key in ("labels", "stores", "tasks"):
            if key not in raw:
                raise ConfigError(located(source, f"missing required key {key!r}"))
        if not isinstance(raw["stores"], dict) or not raw["stores"]:
            raise ConfigError(located(source, "'stores' must map names to store paths"))

        def resolve(p: Any) -> str:
            return str(p) if Path(str(p)).is_absolute() else str(base / str(p))

        tasks = []
        for i, t in enumerate(raw["tasks"] or []):
            if not isinstance(t, dict) or "task" not in t:
                raise ConfigError(located(source, f"task #{i + 1} needs a 'task' key"))
            if t["task"] not in TASKS:
                raise ConfigError(located(source, f"task #{i + 1}: unknown task {t['task']!r}; choose from {list(TASKS)}"))
            check_known_keys(t, ("name", "task", "targets", "heads", "config", "fractions", "fraction_seeds", "head",
                                 "target"), what="task key", source=f"{source}: task #{i + 1}")
            targets = t.get("targets", t.get("target", []))
            heads = t.get("heads", [t["head"]] if "head" in t else [None])
            tasks.append(TaskEntry(
                name=str(t.get("name", f"{t['task']}{i + 1}")), task=t["task"],
                targets=[targets] if isinstance(targets, str) else list(targets or []),
                heads=list(heads), config=dict(t.get("config") or {}), fractions=list(t.get("fractions") or []),
                fraction_seeds=list(t.get("fraction_seeds") or [0, 1, 2]),
            ))
        if not tasks:
            raise ConfigError(located(source, "no tasks"))
        stores = {str(k): resolve(v) for k, v in raw["stores"].items()}
        reference = raw.get("reference")
        if reference is not None and reference not in stores:
            raise ConfigError(located(source, f"reference {reference!r} is not one of the stores {list(stores)}"))
        return cls(labels=resolve(raw["labels"]), stores=stores, tasks=tasks,
                   split_column=raw.get("split_column", "split"),
                   split_dir=resolve(raw["split_dir"]) if raw.get("split_dir") else None,
                   reference=reference, config=dict(raw.get("config") or {}))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _Features:
    """Each store read once per suite: with patch tokens when any task needs them, else CLS only."""

    def __init__(self, stores: dict[str, str]) -> None:
        self.stores = stores
        self.cache: dict[tuple[str, bool], FeatureSet] = {}

    def __call__(self, store: str, patches: bool) -> FeatureSet:
        if (store, True) in self.cache:
            return self.cache[(store, True)]
        if (store, patches) not in self.cache:
            self.cache[(store, patches)] = FeatureSet.from_store(self.stores[store], patches=patches, name=store)
        return self.cache[(store, patches)]


@dataclass
class _Outcome:
    """What a suite run collects: metric rows, difference tables and errors."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    diffs: list[pd.DataFrame] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)


def _probe_stores(suite: Suite, entry: TaskEntry, head_name: str, cfg: dict[str, Any], features: _Features,
                  out: Path, outcome: _Outcome, keep_going: bool) -> dict[str, Any]:
    """One task × head on every store; returns the results by store (failures go to ``outcome``)."""
    from voxelfm.probes.run import needs_patches, run_probe

    results = {}
    for store in suite.stores:
        try:  # an invalid config is a failure of this task like any other
            res = run_probe(entry.task, features(store, needs_patches(entry.task, cfg)), suite.labels, target=entry.targets or None,
                            out_dir=out / entry.name / head_name / store, config=cfg,
                            split_column=suite.split_column, split_dir=suite.split_dir)
        except VoxelFMError as exc:
            if not keep_going:
                raise
            log.error("%s/%s/%s failed: %s", entry.name, head_name, store, exc)
            outcome.errors.append({"name": entry.name, "head": head_name, "backbone": store, "error": str(exc)})
            continue
        results[store] = res
        outcome.rows += [{"name": entry.name, "task": entry.task, "head": head_name, "backbone": store,
                          "metric": metric, **ci.to_dict()} for metric, ci in res.metrics.items()]
    return results


def _fraction_curves(suite: Suite, entry: TaskEntry, head_name: str, cfg: dict[str, Any], features: _Features,
                     out: Path, outcome: _Outcome, keep_going: bool) -> None:
    """The task's data-fraction sweep on every store: ``fractions_<name>_<head>.csv``."""
    from voxelfm.probes.fractions import fraction_sweep
    from voxelfm.probes.run import needs_patches

    frames = []
    for store in suite.stores:
        try:
            f = fraction_sweep(entry.task, features(store, needs_patches(entry.task, cfg)), suite.labels,
                               fractions=entry.fractions, seeds=entry.fraction_seeds, target=entry.targets or None,
                               config=cfg, out_dir=out / entry.name / head_name / f"fractions_{store}",
                               split_column=suite.split_column, split_dir=suite.split_dir)
        except VoxelFMError as exc:
            if not keep_going:
                raise
            outcome.errors.append({"name": entry.name, "head": head_name, "backbone": store,
                                   "error": f"fraction sweep: {exc}"})
            continue
        frames.append(f.assign(backbone=store, task=entry.task))
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out / f"fractions_{entry.name}_{head_name}.csv", index=False)


def run_suite(suite: Suite | str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
              keep_going: bool = True) -> pd.DataFrame:
    """Run every task × head × store of a suite; returns the summary table (also written to disk).

    With ``keep_going`` a failing task is recorded in ``summary.json`` (``errors``) and the rest run.
    """
    from voxelfm.probes.compare import differences_to

    if not isinstance(suite, Suite):
        suite = Suite.load(suite)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = suite.reference or list(suite.stores)[-1]
    features = _Features(suite.stores)
    outcome = _Outcome()
    for entry in suite.tasks:
        for head in entry.heads:
            cfg = _merge(suite.config, entry.config)
            if head is not None:
                cfg["head"] = head
            head_name = cfg.get("head") or DEFAULT_HEADS.get(entry.task, "mlp")
            results = _probe_stores(suite, entry, head_name, cfg, features, out, outcome, keep_going)
            d = differences_to(results, reference) if reference in results else pd.DataFrame()
            if len(d):
                outcome.diffs.append(d.assign(name=entry.name, head=head_name)[["name", "head", *d.columns]])
            if entry.fractions:
                _fraction_curves(suite, entry, head_name, cfg, features, out, outcome, keep_going)
    summary = pd.DataFrame(outcome.rows)
    differences = pd.concat(outcome.diffs, ignore_index=True) if outcome.diffs else pd.DataFrame()
    summary.to_csv(out / "summary.csv", index=False)
    differences.to_csv(out / "differences.csv", index=False)
    payload = {"summary": summary.to_dict(orient="records"), "differences": differences.to_dict(orient="records"),
               "errors": outcome.errors, "stores": suite.stores, "reference": reference}
    atomic_write_text(out / "summary.json", json.dumps(payload, indent=1, default=str))
    return summary


__all__ = ["HEADLINE", "Suite", "TaskEntry", "run_suite"]
