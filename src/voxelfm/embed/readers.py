"""A pool of reader processes that survives the death of a worker.

``voxelfm embed`` reads and preprocesses scans in worker processes while the main process runs the
backbone. A worker can die without a word: the out-of-memory killer sends SIGKILL to the process
holding a huge volume. A plain ``DataLoader`` then may wait forever for a result that will never
come. Here every worker has its own pipe and the parent waits on the pipes *and* on the workers'
process sentinels, so a death is noticed at once: the job that worker was reading is reported as
failed with the reason, the jobs queued behind it go back to the queue, a fresh worker takes its
place, and after too many deaths the remaining jobs are read in the main process.

Workers die with their parent (:func:`voxelfm.core.processes.exit_with_parent`), so a ``kill -9``
of the command leaves no orphans, and they close the parent's store-lock descriptors so a lock is
never held past its owner's death.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxelfm.core.processes import exit_with_parent

log = logging.getLogger(__name__)


def _worker_main(conn: Any, read: Callable[[Any], Any], parent: int, close_fds: Sequence[int]) -> None:
    exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        import torch

        torch.set_num_threads(1)  # workers do I/O and numpy; leave the cores to the backbone
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, item = message
        result = read(item)
        try:
            conn.send((index, result, None))
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be pickled
            conn.send((index, None, f"{type(exc).__name__}: {exc}"))


def death_reason(exitcode: int | None) -> str:
    """Readable cause of a worker's end from its exit code."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (e.g. by the out-of-memory killer)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {exitcode}"


@dataclass
class _Worker:
    process: Any
    conn: Any
    assigned: deque = field(default_factory=deque)  # (index, item), oldest = the one being read


class ReaderPool:
    """Apply ``read(item)`` to items in ``workers`` processes, yielding results as they finish.

    ``read`` must not raise (turn errors into results). When a worker dies, ``on_death(item,
    reason)`` makes the result of the item it was reading. At most ``prefetch`` items wait per
    worker; after ``max_restarts`` deaths the rest is read in this process. ``workers=0`` reads
    everything in this process. Use as a context manager so the workers are always stopped.
    """

    def __init__(self, read: Callable[[Any], Any], workers: int, *, on_death: Callable[[Any, str], Any],
                 prefetch: int = 2, max_restarts: int | None = None, close_fds: Iterable[int] = ()) -> None:
        self.read = read
        self.n_workers = max(0, int(workers))
        self.on_death = on_death
        self.prefetch = max(1, int(prefetch))
        self.max_restarts = 2 * self.n_workers + 2 if max_restarts is None else max_restarts
        self.close_fds = tuple(close_fds)
        self.deaths = 0
        self._workers: list[_Worker] = []
        # fork where available: no re-import of the caller's __main__ (spawn would need a main guard
        # in every user script); workers run single-threaded, so no OpenMP pool is shared.
        methods = multiprocessing.get_all_start_methods()
        self._context = multiprocessing.get_context("fork" if "fork" in methods else None)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.process.pid for w in self._workers if w.process.is_alive()]

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_worker_main, name="voxelfm-reader", daemon=True,
                                        args=(child_end, self.read, os.getpid(), self.close_fds))
        process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def close(self) -> None:
        """Stop every worker (ask, then terminate, then kill)."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []

    def imap(self, items: Iterable[Any]) -> Iterator[Any]:
        """Results of ``read`` for every item, in the order they finish."""
        pending: deque = deque(enumerate(items))
        if self.n_workers == 0:
            for _, item in pending:
                yield self.read(item)
            return
        self._workers = [self._start() for _ in range(min(self.n_workers, len(pending)))]
        while self._workers:
            for worker in self._workers:
                while len(worker.assigned) < self.prefetch and pending:
                    entry = pending.popleft()
                    worker.assigned.append(entry)
                    try:
                        worker.conn.send(entry)
                    except (BrokenPipeError, OSError):
                        break  # dead; its sentinel is ready and handled below
            busy = [w for w in self._workers if w.assigned]
            if not busy:
                break
            ready = multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    yield from self._collect(worker, pending)
        self.close()
        for _, item in pending:  # left over after too many deaths: read here
            yield self.read(item)

    def _collect(self, worker: _Worker, pending: deque) -> Iterator[Any]:
        """Results a worker has sent; if it died, the failure of its current item and a restart."""
        while worker.assigned:
            try:
                if not worker.conn.poll():
                    break
                _, result, error = worker.conn.recv()
            except (EOFError, OSError):
                break  # the pipe closed: the worker is gone (checked below)
            _, item = worker.assigned.popleft()
            if error is not None:
                result = self.on_death(item, f"reader worker could not return its result ({error})")
            yield result
        if worker.process.is_alive():
            return
        worker.process.join()
        reason = f"reader worker (pid {worker.process.pid}) {death_reason(worker.process.exitcode)} while reading it"
        self.deaths += 1
        log.warning("%s", reason)
        lost = list(worker.assigned)
        worker.conn.close()
        self._workers.remove(worker)
        if lost:
            pending.extendleft(reversed(lost[1:]))  # not started yet: back to the front of the queue
            yield self.on_death(lost[0][1], reason)
        if pending and self.deaths <= self.max_restarts:
            self._workers.append(self._start())
        elif pending and not self._workers:
            log.warning("%d reader workers died; reading the remaining %d scans in the main process",
                        self.deaths, len(pending))


__all__ = ["ReaderPool", "death_reason"]
