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
from voxelfm.core.errors import ConfigError, located
from voxelfm.core.readers import read_yaml
from voxelfm.probes.config import DEFAULT_HEADS, TASKS
from voxelfm.probes.data import forget_features
from voxelfm.probes.jobs import Outcome, ProbeJob, run_jobs

log = logging.getLogger(__name__)

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


#: Rough relative cost of a probe run by head (scheduling order only, never results).
_HEAD_COST = {"qformer": 5.0, "decoder": 5.0, "localiser": 4.0}


@dataclass(frozen=True)
class _Group:
    """One task × head: its probe job on every store, then its sweeps (:class:`ProbeJob`)."""

    entry: TaskEntry
    head: str
    jobs: list[ProbeJob]


def _plan(suite: Suite, out: Path, keep_going: bool) -> list[_Group]:
    """The suite's jobs grouped by task × head: the probe on every store, then its sweeps."""
    groups = []
    for entry in suite.tasks:
        for head in entry.heads:
            cfg = _merge(suite.config, entry.config)
            if head is not None:
                cfg["head"] = head
            head_name = cfg.get("head") or DEFAULT_HEADS.get(entry.task, "mlp")
            common = {"task": entry.task, "labels": suite.labels, "targets": tuple(entry.targets), "config": cfg,
                      "split_column": suite.split_column, "split_dir": suite.split_dir, "keep_going": keep_going}
            cost = _HEAD_COST.get(head_name, 1.0)
            jobs = [ProbeJob(store=path, store_name=store, label=f"{entry.name}/{head_name}/{store}",
                             out_dir=str(out / entry.name / head_name / store), cost=cost, **common)
                    for store, path in suite.stores.items()]
            if entry.fractions:
                jobs += [ProbeJob(store=path, store_name=store, label=f"{entry.name}/{head_name}/{store} fraction sweep",
                                  out_dir=str(out / entry.name / head_name / f"fractions_{store}"),
                                  fractions=tuple(entry.fractions), fraction_seeds=tuple(entry.fraction_seeds),
                                  cost=cost * len(entry.fractions) * len(entry.fraction_seeds), **common)
                         for store, path in suite.stores.items()]
            groups.append(_Group(entry, head_name, jobs))
    return groups


@dataclass
class _Outcome:
    """What a suite run collects: metric rows, difference tables and errors."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    diffs: list[pd.DataFrame] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def add(self, group: _Group, results: list[Outcome], out: Path) -> dict[str, Any]:
        """One task × head's finished jobs: metric rows, errors and the fraction table; returns the
        probe results by store."""
        runs, frames = {}, []
        entry, head = group.entry, group.head
        for job, (status, value) in zip(group.jobs, results, strict=True):
            if status == "failed":
                self.errors.append({"name": entry.name, "head": head, "backbone": job.store_name,
                                    "error": f"fraction sweep: {value}" if job.sweep else value})
            elif job.sweep:
                frames.append(value.assign(backbone=job.store_name, task=entry.task))
            else:
                runs[job.store_name] = value
                self.rows += [{"name": entry.name, "task": entry.task, "head": head, "backbone": job.store_name,
                               "metric": metric, **ci.to_dict()} for metric, ci in value.metrics.items()]
        if frames:
            pd.concat(frames, ignore_index=True).to_csv(out / f"fractions_{entry.name}_{head}.csv", index=False)
        return runs

    def add_differences(self, groups: list[_Group], runs: list[dict[str, Any]], reference: str,
                        workers: int) -> None:
        """``<store> − reference`` of every task × head, the paired bootstraps on ``workers`` processes."""
        from voxelfm.probes.compare import differences_between, differences_frame

        results = {(i, store): run for i, by_store in enumerate(runs) for store, run in by_store.items()}
        computed = differences_between(results, [((i, store), (i, reference)) for i, store in results
                                                 if store != reference], workers=workers)
        by_group: list[dict[str, Any]] = [{} for _ in groups]
        for ((i, store), _), diffs in computed.items():
            group = groups[i]
            if isinstance(diffs, str):
                log.error("%s/%s: no differences %s − %s: %s", group.entry.name, group.head, store, reference, diffs)
                self.errors.append({"name": group.entry.name, "head": group.head, "backbone": store,
                                    "error": f"differences to {reference}: {diffs}"})
            else:
                by_group[i][store] = diffs
        for group, diffs in zip(groups, by_group, strict=True):
            d = differences_frame(diffs, reference)
            if len(d):
                self.diffs.append(d.assign(name=group.entry.name, head=group.head)[["name", "head", *d.columns]])


def run_suite(suite: Suite | str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
              keep_going: bool = True, workers: int | None = None) -> pd.DataFrame:
    """Run every task × head × store of a suite; returns the summary table (also written to disk).

    The probe runs and fraction sweeps are independent jobs, run single-threaded on ``workers``
    processes at once (:func:`voxelfm.core.parallel.run_items`; None: two where the machine has two
    cores or more): the numbers do not depend on the worker count. Their paired differences to the
    reference then run on the same number of workers. With ``keep_going`` a failing job is logged,
    recorded in ``summary.json`` (``errors``) and the rest run; without, it is raised.
    """
    from voxelfm.core.parallel import default_workers

    if not isinstance(suite, Suite):
        suite = Suite.load(suite)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = suite.reference or list(suite.stores)[-1]
    groups = _plan(suite, out, keep_going)
    jobs = [job for group in groups for job in group.jobs]
    finished = 0

    def done(i: int, result: Outcome) -> None:  # progress, in this process as each job ends
        nonlocal finished
        finished += 1
        if result[0] == "failed":
            log.error("[%d/%d] %s failed: %s", finished, len(jobs), jobs[i].label, result[1])
        else:
            log.info("[%d/%d] %s done", finished, len(jobs), jobs[i].label)

    log.info("%d probe jobs (%d task-head pairs on %d stores) on %d worker process(es)", len(jobs), len(groups),
             len(suite.stores), max(1, min(workers, len(jobs))))
    try:
        results = run_jobs(jobs, workers=workers, done=done)
    finally:
        forget_features()
    outcome, start, runs = _Outcome(), 0, []
    for group in groups:
        runs.append(outcome.add(group, results[start:start + len(group.jobs)], out))
        start += len(group.jobs)
    outcome.add_differences(groups, runs, reference, workers)
    summary = pd.DataFrame(outcome.rows)
    differences = pd.concat(outcome.diffs, ignore_index=True) if outcome.diffs else pd.DataFrame()
    summary.to_csv(out / "summary.csv", index=False)
    differences.to_csv(out / "differences.csv", index=False)
    payload = {"summary": summary.to_dict(orient="records"), "differences": differences.to_dict(orient="records"),
               "errors": outcome.errors, "stores": suite.stores, "reference": reference}
    atomic_write_text(out / "summary.json", json.dumps(payload, indent=1, default=str))
    return summary


__all__ = ["Suite", "TaskEntry", "run_suite"]
