"""voxelfm.core.parallel: items in worker processes come back in order, closures included, an item's
error reaches the caller, and workers end with a killed parent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from processes_helpers import kill_and_expect_gone, reap
from voxelfm.core.parallel import run_items
from voxelfm.core.processes import pid_alive


def _square_and_adder(x: int):  # type: ignore[no-untyped-def]
    if x < 0:
        raise ValueError(f"negative item {x}")
    return x * x, (lambda y: y + x)  # a closure: travels back through cloudpickle


def test_items_come_back_in_order_with_closures_inline_and_in_two_processes() -> None:
    inline = run_items(_square_and_adder, [3, 1, 2], workers=1)
    finished: list[int] = []
    pooled = run_items(_square_and_adder, [3, 1, 2], workers=2, done=lambda i, _r: finished.append(i))
    assert [r[0] for r in pooled] == [r[0] for r in inline] == [9, 1, 4]
    assert [r[1](10) for r in pooled] == [13, 11, 12]
    assert sorted(finished) == [0, 1, 2]


def test_a_failing_item_raises_in_the_caller() -> None:
    with pytest.raises(ValueError, match="negative item -1"):
        run_items(_square_and_adder, [2, -1], workers=2)


KILLED_PARENT = """
import os, sys, time
from voxelfm.core.parallel import run_items

def report_and_sleep(path):
    open(path + str(os.getpid()), "w").close()
    time.sleep(300)

if __name__ == "__main__":
    run_items(report_and_sleep, [sys.argv[1] + "-a-", sys.argv[1] + "-b-"], workers=2)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl")
def test_workers_end_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILLED_PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path / "w")])
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("w-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name.rsplit("-", 1)[1]) for p in tmp_path.glob("w-*")]
        assert len(workers) == 2 and all(pid_alive(pid) for pid in workers)
        kill_and_expect_gone(parent, workers)
    finally:
        reap(parent)
