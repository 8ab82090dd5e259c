"""One strict checker for configuration values: unknown keys, types and ranges, one line each.

Every configuration voxelfm reads (pretraining YAML, probe options, report training, preprocess
specs, model architectures) goes through these functions, so a typo or a value of the wrong kind
is always refused the same way, before any work starts::

    unknown probe option 'lr_typo'; known: balance, balanced, ...
    train.lr=-0.001: expected a number > 0
    train.resume='yes': expected true or false

Expected kinds come from a dataclass's type hints (:func:`check_dataclass`) or from the value of a
default configuration (:func:`check_tree`); ranges and choices from :class:`Rule` s.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from voxelfm.core.errors import ConfigError, located

_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


@dataclass(frozen=True)
class Rule:
    """What a key accepts beyond its type: a closed range, open bounds, a set of choices.

    ``kind`` overrides the inferred type: ``"int"``, ``"number"``, ``"bool"``, ``"str"``, ``"list"``,
    ``"mapping"`` or ``"any"``; ``items`` the kind of list items; ``nullable`` allows ``null``.
    """

    kind: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool | None = None
    items: str | None = None
    finite: bool = False


# -- kinds ----------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_KIND_TEST = {
    "int": _is_int,
    "number": _is_number,
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list | tuple),
    "mapping": lambda v: isinstance(v, Mapping),
    "any": lambda v: True,
}
_KIND_TEXT = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
              "list": "a list", "mapping": "a mapping", "any": "any value"}
_ITEMS_TEXT = {"int": "integers", "number": "numbers", "bool": "true/false values", "str": "strings",
               "list": "lists", "mapping": "mappings", "any": "values"}


@dataclass(frozen=True)
class _Spec:
    kinds: tuple[str, ...]
    items: str | None = None
    nullable: bool = False


def _spec_of_hint(hint: Any) -> _Spec:
    """Kinds accepted by a type hint such as ``int``, ``float | None``, ``list[int]``, ``tuple[str, ...]``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(parts) < len(typing.get_args(hint))
        specs = [_spec_of_hint(a) for a in parts]
        kinds = tuple(k for s in specs for k in s.kinds)
        items = next((s.items for s in specs if s.items), None)
        return _Spec(kinds, items, nullable or any(s.nullable for s in specs))
    if hint is Any:
        return _Spec(("any",))
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        items = _spec_of_hint(args[0]).kinds[0] if len(set(args)) == 1 else None
        return _Spec(("list",), items)
    if origin in (dict, Mapping) or hint is dict:
        return _Spec(("mapping",))
    if hint is bool:
        return _Spec(("bool",))
    if hint is int:
        return _Spec(("int",))
    if hint is float:
        return _Spec(("number",))
    if hint is str:
        return _Spec(("str",))
    if dataclasses.is_dataclass(hint):
        return _Spec(("mapping", "any"))  # checked by its own class
    return _Spec(("any",))


def _spec_of_default(value: Any) -> _Spec:
    """Kinds inferred from a default value (``null`` defaults accept anything unless a rule says)."""
    if value is None:
        return _Spec(("any",), nullable=True)
    if isinstance(value, bool):
        return _Spec(("bool",))
    if _is_number(value):
        return _Spec(("number",))  # ints in YAML defaults are often fine as floats (epochs, weights)
    if isinstance(value, str):
        return _Spec(("str",))
    if isinstance(value, list | tuple):
        return _Spec(("list",))
    if isinstance(value, Mapping):
        return _Spec(("mapping",))
    return _Spec(("any",))


def _merge(spec: _Spec, rule: Rule | None) -> _Spec:
    if rule is None:
        return spec
    kinds = (rule.kind,) if rule.kind else spec.kinds
    items = rule.items or spec.items
    nullable = spec.nullable if rule.nullable is None else rule.nullable
    return _Spec(kinds, items, nullable)


def _range_text(rule: Rule) -> str:
    parts = []
    if rule.low is not None:
        parts.append(f"{'>' if rule.low_open else '>='} {rule.low:g}")
    if rule.high is not None:
        parts.append(f"{'<' if rule.high_open else '<='} {rule.high:g}")
    return " and ".join(parts)


def expected_text(spec: _Spec, rule: Rule | None) -> str:
    """``"a number > 0"``, ``"an integer >= 1 or null"``, ``"one of 'a', 'b'"``, ``"a list of integers"``."""
    if rule is not None and rule.choices is not None:
        text = "one of " + ", ".join(repr(c) for c in rule.choices)
    else:
        names = [_KIND_TEXT[k] for k in spec.kinds if k != "any"] or ["any value"]
        text = " or ".join(dict.fromkeys(names))
        if spec.items and "list" in spec.kinds:
            text = text.replace("a list", f"a list of {_ITEMS_TEXT[spec.items]}")
        if rule is not None and rule.finite:
            text = text.replace("a number", "a finite number")
        if rule is not None and _range_text(rule):
            text += " " + _range_text(rule)
    return text + (" or null" if spec.nullable else "")


def _in_range(value: Any, rule: Rule) -> bool:
    if value != value:  # NaN is in no range
        return False
    if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
        return False
    return not (rule.high is not None and (value > rule.high or (rule.high_open and value == rule.high)))


def _fits(value: Any, spec: _Spec, rule: Rule | None) -> bool:
    if value is None:
        return spec.nullable or "any" in spec.kinds and (rule is None or rule.nullable is not False)
    if rule is not None and rule.choices is not None:
        return value in rule.choices
    if not any(_KIND_TEST[k](value) for k in spec.kinds):
        return False
    if spec.items and isinstance(value, list | tuple) and not all(_KIND_TEST[spec.items](v) for v in value):
        return False
    if rule is not None and rule.finite and _is_number(value) and not math.isfinite(value):
        return False
    if rule is not None and _is_number(value):
        return _in_range(value, rule)
    if rule is not None and spec.items in ("int", "number") and isinstance(value, list | tuple):
        return all(_in_range(v, rule) for v in value)
    return True


def check_value(key: str, value: Any, spec: _Spec, rule: Rule | None = None, source: object = None) -> None:
    """Raise ``ConfigError("<source>: <key>=<value>: expected <what>")`` unless ``value`` fits."""
    if not _fits(value, spec, rule):
        raise ConfigError(located(source, f"{key}={value!r}: expected {expected_text(spec, rule)}"))


# -- keys -----------------------------------------------------------------------------------------
def check_known_keys(data: Mapping[str, Any], known: Iterable[str], *, what: str = "config key",
                     source: object = None, prefix: str = "", list_known: bool = True) -> None:
    """Refuse keys not in ``known``: ``unknown <what> 'a.b'`` (plural for several), with the known ones."""
    known = list(known)
    unknown = [k for k in data if k not in known]
    if not unknown:
        return
    names = ", ".join(repr(f"{prefix}{k}") for k in unknown)
    text = f"unknown {what}{'s' if len(unknown) > 1 else ''} {names}"
    if list_known:
        text += f"; known: {', '.join(sorted(map(str, known)))}"
    raise ConfigError(located(source, text))


# -- dataclasses ----------------------------------------------------------------------------------
def check_dataclass(obj: Any, rules: Mapping[str, Rule] | None = None, *, source: object = None,
                    prefix: str = "") -> None:
    """Check every field of a dataclass instance against its type hint and ``rules`` (by field name)."""
    rules = rules or {}
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue  # a nested config checks itself
        check_value(f"{prefix}{f.name}", value, _merge(_spec_of_hint(hints[f.name]), rules.get(f.name)),
                    rules.get(f.name), source)


def check_fields(cls: type, data: Mapping[str, Any], rules: Mapping[str, Rule] | None = None, *,
                 source: object = None, prefix: str = "") -> None:
    """Check the values in ``data`` against the type hints of dataclass ``cls`` *before* it is built
    (so a wrong type is named instead of failing inside ``__post_init__``); other keys are ignored."""
    rules = rules or {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in data and not dataclasses.is_dataclass(data[f.name]):
            rule = rules.get(f.name)
            check_value(f"{prefix}{f.name}", data[f.name], _merge(_spec_of_hint(hints[f.name]), rule), rule, source)


def from_mapping(cls: type, data: Mapping[str, Any], *, what: str, source: object = None,
                 prefix: str = "", check_types: bool = False) -> Any:
    """``cls(**data)`` after refusing unknown keys (the class checks its values in ``__post_init__``);
    ``check_types`` also checks every value's type first (:func:`check_fields`)."""
    if not isinstance(data, Mapping):
        raise ConfigError(located(source, f"{prefix.rstrip('.') or what} must be a mapping, got {data!r}"))
    check_known_keys(data, [f.name for f in dataclasses.fields(cls)], what=what, source=source, prefix=prefix)
    if check_types:
        check_fields(cls, data, source=source, prefix=prefix)
    return cls(**data)


# -- nested mappings (YAML configs) ---------------------------------------------------------------
def _rule_for(dotted: str, rules: Mapping[str, Rule]) -> Rule | None:
    if dotted in rules:
        return rules[dotted]
    return next((r for pattern, r in rules.items() if "*" in pattern and fnmatch.fnmatchcase(dotted, pattern)), None)


def check_tree(config: Mapping[str, Any], defaults: Mapping[str, Any], rules: Mapping[str, Rule] | None = None, *,
               source: object = None, free: Iterable[str] = (), prefix: str = "", _rel: str = "") -> None:
    """Check a nested config against its defaults: no unknown keys, each value of its default's kind
    (or its rule's), ranges and choices from ``rules``.

    Rule keys and ``free`` are dotted paths relative to ``config`` (``*`` wildcards allowed);
    ``prefix`` only prefixes the key names in messages. Sub-trees named in ``free`` are not
    descended into (their own checks apply).
    """
    rules = rules or {}
    free = set(free)
    check_known_keys(config, defaults, what="config key", source=source, prefix=prefix + _rel, list_known=False)
    for key, value in config.items():
        rel = f"{_rel}{key}"
        if rel in free:
            continue
        default = defaults[key]
        rule = _rule_for(rel, rules)
        if isinstance(default, Mapping) and isinstance(value, Mapping) and rule is None:
            check_tree(value, default, rules, source=source, free=free, prefix=prefix, _rel=f"{rel}.")
            continue
        check_value(prefix + rel, value, _merge(_spec_of_default(default), rule), rule, source)


def yaml_numbers(value: Any) -> Any:
    """Strings like ``5e-4`` turned into floats, in nested lists and mappings too (YAML 1.1, which
    PyYAML speaks, reads exponent numbers without a dot as strings)."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: yaml_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [yaml_numbers(v) for v in value]
    return value


def yaml_value(text: str) -> Any:
    """A ``key=value`` value parsed as YAML, with ``5e-4``-style numbers read as floats (YAML 1.1
    reads them as strings); text that is not valid YAML stays a string."""
    import yaml

    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text
    return yaml_numbers(value)


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: ``{}``), numbers as :func:`yaml_numbers`;
    a missing file, invalid YAML or another top level is one ``ConfigError`` naming the file
    (read by :func:`voxelfm.core.readers.read_yaml`)."""
    from voxelfm.core.readers import read_yaml

    return yaml_numbers(read_yaml(path, what="config file", error=ConfigError, mapping=True))


# -- key=value assignments (--set, pretraining overrides) -----------------------------------------
def parse_assignment(text: str, *, flag: str = "--set", form: str = "key=value",
                     example: str = "train.lr=1e-4") -> tuple[list[str], Any]:
    """``"optim.epochs=10"`` -> ``(["optim", "epochs"], 10)``; the value is read by :func:`yaml_value`.
    Malformed text: ``"<flag> expects <form> (e.g. <example>), got '<text>'"``."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"{flag} expects {form} (e.g. {example}), got {text!r}")
    return parts, yaml_value(raw)


def apply_assignments(tree: Mapping[str, Any], items: Iterable[str], *, flag: str = "--set",
                      form: str = "key=value", example: str = "train.lr=1e-4") -> dict[str, Any]:
    """A copy of ``tree`` with each ``key=value`` of ``items`` set: dotted keys reach into sections
    (created when missing) and list items by index (``datasets.0.weight=2``). Values are checked
    later, by whoever reads the config; a key through a plain value is a ``ConfigError``."""
    out = copy.deepcopy(dict(tree))
    for text in items:
        parts, value = parse_assignment(text, flag=flag, form=form, example=example)
        node: Any = out
        for i, part in enumerate(parts):
            if not isinstance(node, dict | list):
                raise ConfigError(f"{flag} {text}: {'.'.join(parts[:i])} is not a section")
            last = i == len(parts) - 1
            if isinstance(node, list):
                try:
                    index = int(part)
                    if last:
                        node[index] = value
                    else:
                        node = node[index]
                except (ValueError, IndexError):
                    raise ConfigError(f"{flag} {text}: no list item {part!r}") from None
            elif last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return out


__all__ = [
    "Rule",
    "apply_assignments",
    "check_dataclass",
    "check_fields",
    "check_known_keys",
    "check_tree",
    "check_value",
    "expected_text",
    "from_mapping",
    "parse_assignment",
    "read_yaml_mapping",
    "yaml_numbers",
    "yaml_value",
]
