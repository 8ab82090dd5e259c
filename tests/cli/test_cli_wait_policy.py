"""The CLI makes OpenMP threads sleep at barriers unless the user chose otherwise, and sets it before
torch (which reads it when it loads OpenMP) is imported."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import sys, os, voxelfm.cli.main; "
         "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")


def _run(env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_cli_defaults_to_passive_waiting_before_torch_loads() -> None:
    assert _run(None) == "PASSIVE False"


def test_a_users_wait_policy_wins() -> None:
    assert _run("ACTIVE") == "ACTIVE False"
