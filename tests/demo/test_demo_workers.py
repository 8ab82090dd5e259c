"""The demo's worker count (voxelfm.core.parallel processes) is not part of any stage's fingerprint."""

from __future__ import annotations

import pytest

from voxelfm.core.errors import ConfigError
from voxelfm.demo.config import DemoConfig, get_config


def test_workers_do_not_change_what_the_demo_computes() -> None:
    one, two = get_config("tiny", workers=1), get_config("tiny", workers=2)
    assert (one.workers, two.workers) == (1, 2)
    for part in ("cohort", "pretrain", "embed", "probes", "reportgen", "n_examples"):
        assert one.fingerprint(part) == two.fingerprint(part)
    assert isinstance(get_config("tiny"), DemoConfig) and get_config("tiny").workers >= 1
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        get_config("tiny", workers=0)
