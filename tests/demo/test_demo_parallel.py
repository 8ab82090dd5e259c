"""voxelfm.demo.parallel: items in worker processes come back in order, closures included, and the
worker count is not part of any stage's fingerprint."""

from __future__ import annotations

import pytest

from voxelfm.core.errors import ConfigError
from voxelfm.demo.config import DemoConfig, get_config
from voxelfm.demo.parallel import run_items


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


def test_workers_do_not_change_what_the_demo_computes() -> None:
    one, two = get_config("tiny", workers=1), get_config("tiny", workers=2)
    assert (one.workers, two.workers) == (1, 2)
    for part in ("cohort", "pretrain", "embed", "probes", "reportgen", "n_examples"):
        assert one.fingerprint(part) == two.fingerprint(part)
    assert isinstance(get_config("tiny"), DemoConfig) and get_config("tiny").workers >= 1
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        get_config("tiny", workers=0)
