"""Root of the test tree: makes ``tests/`` importable, so every test folder can use the shared
helper modules kept here (``synthetic_ct``)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
