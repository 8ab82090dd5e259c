"""The one strict config checker: unknown keys, types and ranges, one line naming key, value, expected."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from voxelfm.core.config_check import (
    Rule,
    check_dataclass,
    check_known_keys,
    check_tree,
    from_mapping,
    yaml_value,
)
from voxelfm.core.errors import ConfigError


@dataclass
class Options:
    epochs: int = 3
    lr: float = 1e-3
    min_lr: float | None = None
    verbose: bool = False
    name: str = "x"
    ks: list[int] = field(default_factory=lambda: [1, 5])
    mode: str = "a"

    def __post_init__(self) -> None:
        check_dataclass(self, {"epochs": Rule(low=1), "lr": Rule(low=0, low_open=True), "ks": Rule(low=1),
                               "mode": Rule(choices=("a", "b"))}, source="opts.yaml")


@pytest.mark.parametrize(("values", "message"), [
    ({"lr": -0.001}, "opts.yaml: lr=-0.001: expected a number > 0"),
    ({"lr": "fast"}, "opts.yaml: lr='fast': expected a number > 0"),
    ({"epochs": 2.5}, "epochs=2.5: expected an integer >= 1"),
    ({"epochs": True}, "epochs=True: expected an integer >= 1"),
    ({"verbose": "yes"}, "verbose='yes': expected true or false"),
    ({"min_lr": "0"}, "min_lr='0': expected a number or null"),
    ({"ks": [1, "5"]}, "ks=[1, '5']: expected a list of integers >= 1"),
    ({"ks": [0]}, "ks=[0]: expected a list of integers >= 1"),
    ({"ks": 5}, "ks=5: expected a list of integers >= 1"),
    ({"mode": "c"}, "mode='c': expected one of 'a', 'b'"),
    ({"name": None}, "name=None: expected a string"),
    ({"lr": float("nan")}, "lr=nan: expected a number > 0"),
])
def test_dataclass_values_are_checked_in_one_line(values, message) -> None:
    with pytest.raises(ConfigError) as info:
        Options(**values)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_valid_values_pass_and_ints_are_numbers() -> None:
    import numpy as np

    Options(epochs=np.int64(4), lr=1, min_lr=0.0, ks=(1, 2), mode="b")


def test_unknown_keys_are_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"^unknown option 'lr_typo'; known: epochs, ks, lr, min_lr, mode, name, verbose$"):
        from_mapping(Options, {"lr_typo": 1}, what="option")
    with pytest.raises(ConfigError, match=r"unknown options 'a', 'b'"):
        check_known_keys({"a": 1, "b": 2}, ["c"], what="option")
    with pytest.raises(ConfigError, match=r"train must be a mapping"):
        from_mapping(Options, 5, what="option", prefix="train.")
    assert from_mapping(Options, {"epochs": 7}, what="option").epochs == 7


def test_nested_trees_follow_their_defaults_and_rules() -> None:
    defaults = {"train": {"resume": True, "seed": 0, "max_steps": None, "device": "auto"},
                "schedules": {"lr": {"peak": 1e-3, "warmup_epochs": 10}}, "free": {"anything": 1}}
    rules = {"train.seed": Rule(kind="int"), "train.max_steps": Rule(kind="int", low=1),
             "schedules.*.warmup_epochs": Rule(low=0), "schedules.*.*": Rule(low=0, low_open=True)}

    def check(config):
        check_tree(config, defaults, rules, source="run.yaml", free={"free"})

    check({"train": {"resume": False, "seed": 3, "max_steps": None}, "free": {"x": "y"},
           "schedules": {"lr": {"warmup_epochs": 0}}})
    cases = [({"train": {"resume": "yes"}}, "run.yaml: train.resume='yes': expected true or false"),
             ({"train": {"seed": 1.5}}, "train.seed=1.5: expected an integer"),
             ({"train": {"max_steps": 0}}, "train.max_steps=0: expected an integer >= 1 or null"),
             ({"train": {"device": 0}}, "train.device=0: expected a string"),
             ({"schedules": {"lr": {"peak": 0}}}, "schedules.lr.peak=0: expected a number > 0"),
             ({"schedules": {"lr": 5}}, "schedules.lr=5: expected a mapping"),
             ({"train": {"sed": 1}}, "run.yaml: unknown config key 'train.sed'")]
    for config, message in cases:
        with pytest.raises(ConfigError) as info:
            check(config)
        assert message in str(info.value)


def test_yaml_values_read_exponent_numbers_as_floats() -> None:
    assert yaml_value("1e-4") == 1e-4 and yaml_value("5") == 5 and yaml_value("[1, 2]") == [1, 2]
    assert yaml_value("true") is True and yaml_value("fast") == "fast" and yaml_value("{a") == "{a"
