"""core.readers: one line naming the file for every bad JSON/YAML file; YAML is read safely."""

from __future__ import annotations

import pytest

from voxelfm.core.errors import ConfigError, DataError
from voxelfm.core.readers import read_json, read_yaml


def test_json_errors_name_the_file_and_line(tmp_path) -> None:
    good, bad, listed = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    good.write_text('{"x": 1}')
    bad.write_text('{"x": 1,\n "y": }')
    listed.write_text("[1]")
    assert read_json(good) == {"x": 1} and read_json(listed, mapping=False) == [1]
    with pytest.raises(DataError, match=r"b.json: invalid JSON \(line 2: Expecting value\)$"):
        read_json(bad)
    with pytest.raises(DataError, match=r"c.json: not a JSON object, got list$"):
        read_json(listed)
    with pytest.raises(ConfigError, match=r"none.json: run summary not found$"):
        read_json(tmp_path / "none.json", what="run summary", error=ConfigError)


def test_yaml_is_read_safely_with_located_errors(tmp_path) -> None:
    good, bad, unsafe = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    good.write_text("a: [1, 2]\n")
    bad.write_text("a: 1\nb: [2,\n")
    unsafe.write_text("a: !!python/object/apply:os.system ['true']\n")
    assert read_yaml(good) == {"a": [1, 2]}
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") is None and read_yaml(tmp_path / "empty.yaml", mapping=True) == {}
    with pytest.raises(DataError, match=r"b.yaml: invalid YAML \(line \d+: "):
        read_yaml(bad)
    with pytest.raises(DataError, match=r"c.yaml: invalid YAML"):  # safe_load builds no Python objects
        read_yaml(unsafe)
