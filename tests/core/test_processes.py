"""Process helpers: pid liveness, and a worker that ends when its parent is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from voxelfm.core.processes import pid_alive

SCRIPT = textwrap.dedent("""
    import os, sys, time, multiprocessing as mp
    import voxelfm.core.processes as processes
    if sys.argv[2] == "watchdog":
        processes._set_parent_death_signal = lambda sig: False
    def child(parent):
        processes.exit_with_parent(parent, interval=0.2)
        time.sleep(300)
    if __name__ == "__main__":
        p = mp.get_context("fork").Process(target=child, args=(os.getpid(),))
        p.start()
        open(sys.argv[1], "w").write(str(p.pid))
        time.sleep(300)
""")


def test_pid_alive() -> None:
    assert pid_alive(os.getpid()) and not pid_alive(0) and not pid_alive(-1)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not pid_alive(int(done.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and /proc")
@pytest.mark.parametrize("how", ["prctl", "watchdog"])
def test_a_child_ends_when_its_parent_is_killed(how: str, tmp_path: Path) -> None:
    script, pid_file = tmp_path / "s.py", tmp_path / "pid"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), how])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert pid_alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
