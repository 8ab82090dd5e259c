"""Independent work items (probe runs, report models, paired bootstraps) in worker processes.

Used by ``voxelfm evaluate`` (:func:`voxelfm.probes.suite.run_suite`) and the demo's probes and
report-generation stages: many small, independent trainings. Run one after the other with torch's
default threads, they used the machine badly: a small head's operations are too short to split
across cores, and on a busy machine the threads wait for each other (measured: the same MLP probe
took 3x the CPU time with 2 threads on a loaded machine than with 1). Here each item runs on **one
thread**, and ``workers`` items run at once in spawned processes.

Determinism: an item computes the same numbers inline or in a worker, because every item runs
single-threaded either way (torch intra-op threads and BLAS pools limited to one) and seeds its
own generators. Results are returned in item order, whatever order they finish in. They travel
back through ``cloudpickle`` (a scikit-learn/joblib dependency), which also carries closures such
as a probe's metric function, needed later for paired comparisons. Workers end with their parent
(:func:`voxelfm.core.processes.exit_with_parent`): a killed command leaves nothing training on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Two worker processes where the machine has two cores or more, else one (the default of
    ``voxelfm evaluate --workers`` and ``voxelfm demo --workers``)."""
    return max(1, min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """torch and the BLAS/OpenMP pools on exactly ``n`` threads for the duration (restored afterwards).

    A fixed count, not one per core: float reductions split by thread count, so the numbers then do
    not depend on how many cores the machine has."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def single_thread() -> contextlib.AbstractContextManager[None]:
    """torch and the BLAS/OpenMP pools on one thread for the duration (restored afterwards)."""
    return fixed_threads(1)


def _init_worker(parent: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    from voxelfm.core.processes import exit_with_parent

    exit_with_parent(parent)  # a killed command leaves no worker training on alone
    torch.set_num_threads(1)
    threadpool_limits(limits=1)


def _invoke(fn: Callable[[Any], Any], item: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(fn(item))


def run_items(fn: Callable[[T], R], items: Sequence[T], *, workers: int = 1,
              done: Callable[[int, R], None] | None = None) -> list[R]:
    """``[fn(item) for item in items]``, single-threaded, on ``workers`` processes at once.

    ``fn`` must be a module-level function and the items picklable (they go to spawned
    processes). With ``workers <= 1`` or one item everything runs in this process. ``done(i,
    result)`` is called as each item finishes (progress). An exception in an item is raised here.
    """
    results: list[Any] = [None] * len(items)
    if workers <= 1 or len(items) <= 1:
        with single_thread():
            for i, item in enumerate(items):
                results[i] = fn(item)
                if done is not None:
                    done(i, results[i])
        return results
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import cloudpickle

    pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(),))
    try:
        pending = {pool.submit(_invoke, fn, item): i for i, item in enumerate(items)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                results[i] = cloudpickle.loads(future.result())
                if done is not None:
                    done(i, results[i])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


__all__ = ["default_workers", "fixed_threads", "run_items", "single_thread"]
