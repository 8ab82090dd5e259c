"""How many worker processes to generate scans with, and how to start them (used by both the
in-memory cohort and the on-disk writer)."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from multiprocessing.context import BaseContext

from voxelfm.core.processes import exit_with_parent

#: Approximate peak memory of one worker per size (GB), measured with ``generate_scan``.
PEAK_MEMORY_GB = {"tiny": 0.3, "small": 0.6, "standard": 3.5}


def default_workers(n: int, size: str = "small") -> int:
    """Worker processes for ``n`` scans: one per core, within half the physical memory."""
    if n < 4:
        return 1
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        mem_gb = 8.0
    by_memory = int(0.5 * mem_gb / PEAK_MEMORY_GB.get(size, 1.0))
    return max(1, min(os.cpu_count() or 1, n // 2, by_memory))


def pool_context() -> BaseContext:
    """``fork`` (fast, works from any script) unless torch is loaded: its thread pools make fork
    unsafe, so then ``spawn`` (the caller's main module must be import-safe, as the CLI is)."""
    if "torch" in sys.modules or sys.platform != "linux":
        return get_context("spawn")
    return get_context("fork")


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` scan generators that end with this process (a ``kill -9`` of
    ``voxelfm phantom`` or the demo leaves no orphan rendering on)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(), initializer=exit_with_parent,
                               initargs=(os.getpid(),))
