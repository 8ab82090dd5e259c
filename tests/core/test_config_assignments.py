"""key=value assignments, YAML config files and field types: the one mechanism every reader uses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from voxelfm.core.config_check import (
    Rule,
    apply_assignments,
    check_fields,
    check_value,
    from_mapping,
    parse_assignment,
    read_yaml_mapping,
)
from voxelfm.core.config_check import _spec_of_hint as spec_of
from voxelfm.core.errors import ConfigError


def test_assignments_are_yaml_typed() -> None:
    assert parse_assignment("train.lr=5e-4") == (["train", "lr"], 5e-4)
    assert parse_assignment("a=[1e-3, 2]") == (["a"], [1e-3, 2])
    assert parse_assignment("a=null") == (["a"], None)
    assert parse_assignment("a=") == (["a"], None)
    assert parse_assignment("name=[not yaml") == (["name"], "[not yaml")  # left for the type check


@pytest.mark.parametrize("text", ["novalue", "=1", "a..b=1", ".a=1"])
def test_malformed_assignments_are_one_line(text) -> None:
    with pytest.raises(ConfigError, match=rf"^override expects a.b=c \(e.g. optim.epochs=10\), got '{text}'$"):
        parse_assignment(text, flag="override", form="a.b=c", example="optim.epochs=10")


def test_assignments_reach_sections_and_list_items_without_touching_the_input() -> None:
    tree = {"train": {"lr": 1.0}, "datasets": [{"weight": 1.0}, {"weight": 2.0}]}
    out = apply_assignments(tree, ["train.lr=0.5", "datasets.1.weight=3", "new.key=x"])
    assert out == {"train": {"lr": 0.5}, "datasets": [{"weight": 1.0}, {"weight": 3}], "new": {"key": "x"}}
    assert tree["train"]["lr"] == 1.0 and tree["datasets"][1]["weight"] == 2.0


@pytest.mark.parametrize(("items", "message"), [
    (["train=5", "train.lr=1"], "--set train.lr=1: train is not a section"),
    (["datasets.7.weight=1"], "--set datasets.7.weight=1: no list item '7'"),
    (["datasets.x=1"], "--set datasets.x=1: no list item 'x'"),
    (["datasets.0.weight.deep=1"], "--set datasets.0.weight.deep=1: datasets.0.weight is not a section"),
])
def test_assignments_through_values_are_refused(items, message) -> None:
    with pytest.raises(ConfigError) as info:
        apply_assignments({"datasets": [{"weight": 1.0}]}, items)
    assert str(info.value) == message


def test_yaml_files_must_be_mappings_and_exponents_are_numbers(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  lr: 1e-4\n  steps: [1e3, 2]\n")
    assert read_yaml_mapping(good) == {"train": {"lr": 1e-4, "steps": [1000.0, 2]}}
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml_mapping(tmp_path / "empty.yaml") == {}
    (tmp_path / "c.json").write_text('{"lr": 0.1}')
    assert read_yaml_mapping(tmp_path / "c.json") == {"lr": 0.1}
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"list.yaml: top level must be a mapping, got list$"):
        read_yaml_mapping(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML"):
        read_yaml_mapping(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"missing.yaml: config file not found$"):
        read_yaml_mapping(tmp_path / "missing.yaml")


@dataclass(frozen=True)
class _Arch:
    width: int = 8
    sizes: tuple[int, int, int] = (1, 2, 3)
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.width % 2:  # would raise TypeError on a string: the type check must come first
            raise ConfigError("width must be even")


@pytest.mark.parametrize(("data", "message"), [
    ({"width": "8"}, "width='8': expected an integer"),
    ({"sizes": (1, "2", 3)}, "sizes=(1, '2', 3): expected a list of integers"),
    ({"scale": "big"}, "scale='big': expected a number or null"),
    ({"depth": 2}, "unknown arch key 'depth'; known: scale, sizes, width"),
])
def test_fields_are_checked_before_the_class_is_built(data, message) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(_Arch, data, what="arch key", check_types=True)
    assert str(info.value) == message
    check_fields(_Arch, {"width": 4, "other": "ignored"})
    assert from_mapping(_Arch, {"width": 4, "scale": 2}, what="arch key", check_types=True).width == 4


def test_finite_rule_refuses_nan_and_infinity() -> None:
    rule = Rule(finite=True)
    check_value("x", 1.5, spec_of(float), rule)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match=r"expected a finite number$"):
            check_value("x", bad, spec_of(float), rule)
