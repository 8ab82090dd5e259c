"""Probe jobs: one probe run, or one data-fraction sweep, on one embedding store.

The unit of work of ``voxelfm evaluate`` (:func:`voxelfm.probes.suite.run_suite` plans one job per
task × head × store) and of the demo's probes stage (which plans its own tasks). A job is picklable:
:func:`run_jobs` runs many single-threaded on worker processes (:mod:`voxelfm.core.parallel`), the
costliest first so the workers end together, and returns their outcomes in job order whatever
order they finish in; the numbers do not depend on the worker count. Each process reads a store
once (:func:`voxelfm.probes.data.cached_features`), with patch tokens only when a job needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxelfm.core.errors import VoxelFMError

#: ``("ok", ProbeResult)``, ``("ok", fraction table)`` or ``("failed", message)``.
Outcome = tuple[str, Any]


@dataclass(frozen=True)
class ProbeJob:
    """One probe (:func:`~voxelfm.probes.run.run_probe`) or, with ``fractions``, its data-fraction
    sweep (:func:`~voxelfm.probes.fractions.fraction_sweep`) on the store at ``store``.

    ``label`` names the job in logs and failures; ``store_name`` names the features (the feature
    set's name, in error messages); ``cost`` orders the jobs (longest first), never their results.
    With ``keep_going`` a refused job (an invalid config, a split without both classes) is a
    ``("failed", message)`` outcome, otherwise it raises.
    """

    task: str
    store: str
    labels: str
    label: str
    store_name: str | None = None
    targets: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    out_dir: str | None = None
    fractions: tuple[float, ...] = ()
    fraction_seeds: tuple[int, ...] = (0, 1, 2)
    split_column: str | None = "split"
    split_dir: str | None = None
    figures: bool = True
    cost: float = 1.0
    keep_going: bool = True

    @property
    def sweep(self) -> bool:
        return bool(self.fractions)


def run_job(job: ProbeJob) -> Outcome:
    """Run one job in this process: ``("ok", ProbeResult)``, ``("ok", fraction table)`` or, with
    ``keep_going``, ``("failed", message)``."""
    from voxelfm.probes.data import cached_features
    from voxelfm.probes.fractions import fraction_sweep
    from voxelfm.probes.run import needs_patches, run_probe

    config = dict(job.config)
    target = list(job.targets) or None
    try:
        features = cached_features(job.store, patches=needs_patches(job.task, config), name=job.store_name)
        if job.sweep:
            return "ok", fraction_sweep(job.task, features, job.labels, fractions=job.fractions,
                                        seeds=job.fraction_seeds, target=target, config=config, out_dir=job.out_dir,
                                        split_column=job.split_column, split_dir=job.split_dir)
        return "ok", run_probe(job.task, features, job.labels, target=target, out_dir=job.out_dir, config=config,
                               split_column=job.split_column, split_dir=job.split_dir, figures=job.figures)
    except VoxelFMError as exc:
        if not job.keep_going:
            raise
        return "failed", str(exc)


def run_jobs(jobs: Sequence[ProbeJob], *, workers: int = 1,
             done: Callable[[int, Outcome], None] | None = None) -> list[Outcome]:
    """Every job on ``workers`` processes at once, the costliest first; outcomes in job order.

    ``done(i, outcome)`` is called in this process as job ``i`` ends (progress, logging).
    """
    from voxelfm.core.parallel import run_items

    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)  # stable: plan order among equals
    report = None if done is None else (lambda k, outcome: done(order[k], outcome))
    ran = run_items(run_job, [jobs[i] for i in order], workers=workers, done=report)
    outcomes: list[Outcome] = [("failed", "not run")] * len(jobs)
    for k, i in enumerate(order):
        outcomes[i] = ran[k]
    return outcomes


__all__ = ["Outcome", "ProbeJob", "run_job", "run_jobs"]
