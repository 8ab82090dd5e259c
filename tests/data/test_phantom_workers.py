"""Phantom worker processes end with the command that started them (no orphans after kill -9)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from processes_helpers import kill_and_expect_gone, reap


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl")
def test_a_killed_phantom_command_leaves_no_workers(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "voxelfm.cli.main", "phantom", str(tmp_path / "out"), "--n", "40", "--size", "tiny",
           "--workers", "2", "--seed", "3"]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # Wait until the first scan is written: the pool's workers are then running.
        while not list((tmp_path / "out").glob(".phantom/rows/*.json")) and time.monotonic() < deadline:
            assert parent.poll() is None, "the phantom command ended before its workers could be observed"
            time.sleep(0.1)
        workers = _children(parent.pid)
        assert len(workers) >= 2
        kill_and_expect_gone(parent, workers)
    finally:
        reap(parent)
