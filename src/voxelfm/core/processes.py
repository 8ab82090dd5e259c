"""Process helpers: is a pid alive, and make a worker process die with its parent.

A ``kill -9`` of a batch command gives it no chance to stop its worker processes; without help
they live on as orphans holding gigabytes. :func:`exit_with_parent` (called first thing in a
worker) asks Linux to SIGKILL the worker when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and,
as a fallback for other systems, starts a daemon thread that exits the worker once its parent pid
is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # a zombie has exited; only its exit status is left for the parent to collect
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _set_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(1)  # reparented: our parent is gone, and nobody will read what we make


def exit_with_parent(parent: int, *, interval: float = 1.0) -> None:
    """Make this (worker) process end when process ``parent`` ends.

    Call it at the start of the worker with the parent's pid taken *before* the fork/spawn; if the
    parent already died in between, the worker exits at once.
    """
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent, interval), name="voxelfm-parent-watch",
                     daemon=True).start()


__all__ = ["exit_with_parent", "pid_alive"]
