"""Shared by the tests that kill a command and check that its worker processes end with it."""

from __future__ import annotations

import subprocess
import time

from voxelfm.core.processes import pid_alive


def kill_and_expect_gone(parent: subprocess.Popen, workers: list[int], timeout: float = 15.0) -> None:
    """SIGKILL ``parent`` (no chance to shut a pool down) and assert every worker pid ends."""
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(pid) for pid in workers), f"workers still alive: {[p for p in workers if pid_alive(p)]}"


def reap(parent: subprocess.Popen) -> None:
    """Kill ``parent`` if a failed assertion left it running."""
    if parent.poll() is None:
        parent.kill()
        parent.wait()
