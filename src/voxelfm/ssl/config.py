"""Pretraining configuration: packaged defaults <- YAML file(s) <- ``key=value`` overrides.

The defaults (``configs/default.yaml``) use the keys of the original ``ssl_default_config.yaml``,
so an original config file is accepted as is. Merging is a plain recursive dict merge (no
OmegaConf): mappings merge key by key, anything else (lists included) replaces. Unknown keys are
rejected with the dotted key named, because a silently ignored typo would waste a training run.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from voxelfm.core.config_check import (
    Rule,
    apply_assignments,
    check_tree,
    parse_assignment,
    read_yaml_mapping,
)
from voxelfm.core.device import canonical_precision
from voxelfm.core.errors import ConfigError, located

# Sub-trees whose keys are free-form (no validation against the defaults).
_FREE_KEYS = {"datasets", "MODEL"}
DATASET_KEYS = {"name", "weight", "index_path", "modality", "storage", "pixel_range", "norm", "root"}
_INT = Rule(kind="int")
_COUNT = Rule(kind="int", low=1)
_UNIT = Rule(low=0, high=1)
#: Types and ranges beyond what the defaults' values say (a key absent here must have its
#: default's kind: true/false, a number, a string, a list or a mapping).
SSL_RULES: dict[str, Rule] = {
    "compute_precision": Rule(kind="str"),  # fp32|bf16|fp16|auto (or torch's names): voxelfm.core.device
    "dino.loss_weight": Rule(low=0), "dino.koleo_loss_weight": Rule(low=0), "ibot.loss_weight": Rule(low=0),
    "*.head_n_prototypes": _COUNT, "*.head_bottleneck_dim": _COUNT, "*.head_nlayers": _COUNT,
    "*.head_hidden_dim": _COUNT, "ibot.mask_sample_probability": _UNIT,
    "ibot.mask_ratio_min_max": Rule(kind="list", items="number", low=0, high=1),
    "train.batch_size_per_gpu": _COUNT, "train.grad_accum_steps": _COUNT,
    "train.total_batch_size": Rule(kind="int", low=1, nullable=True), "train.seed": _INT,
    "train.num_workers": Rule(kind="int", low=0), "train.official_epoch_length": _COUNT,
    "train.centering": Rule(choices=("centering", "sinkhorn_knopp")), "train.max_steps": Rule(kind="int", low=1),
    "train.max_minutes": Rule(kind="number", low=0, low_open=True),
    "train.distributed": Rule(choices=("ddp", "fsdp")), "student.arch": Rule(kind="str"),
    "student.embed_dim": _COUNT, "student.depth": _COUNT, "student.num_heads": _COUNT, "student.patch_size": _COUNT,
    "student.num_register_tokens": Rule(kind="int", low=0), "student.mlp_ratio": Rule(low=0, low_open=True),
    "student.layerscale": Rule(kind="number", low=0, nullable=True), "student.rope_base": Rule(low=0, low_open=True),
    "student.rope_rescale_coords": Rule(kind="number", low=1), "student.drop_path_rate": Rule(low=0, high=1, high_open=True),
    "optim.epochs": Rule(low=0, low_open=True), "optim.adamw_beta1": Rule(low=0, high=1, high_open=True),
    "optim.adamw_beta2": Rule(low=0, high=1, high_open=True), "optim.clip_grad": Rule(low=0),
    "optim.layerwise_decay": Rule(low=0, low_open=True, high=1), "optim.patch_embed_lr_mult": Rule(low=0),
    "optim.freeze_last_layer_epochs": Rule(low=0),
    "schedules.*.warmup_epochs": Rule(low=0), "schedules.momentum.*": _UNIT, "schedules.*.*": Rule(low=0),
    "crops.global_crops_size": Rule(kind="any"), "crops.local_crops_size": Rule(kind="any"),
    "crops.crop_pairs_ratios": Rule(kind="any"), "crops.global_crops_scale": Rule(kind="list", items="number"),
    "crops.local_crops_scale": Rule(kind="list", items="number"), "crops.local_crops_number": Rule(kind="int", low=0),
    "crops.window_probability": _UNIT, "crops.flip_probability": _UNIT,
    "checkpointing.period": _COUNT, "checkpointing.max_to_keep": _COUNT,
    "checkpointing.keep_every": Rule(kind="int", low=1, nullable=True), "evaluation.eval_period_iterations": _COUNT,
    "monitor.log_period": _COUNT, "monitor.rank_window": _COUNT, "monitor.collapse_rank_fraction": _UNIT,
    "monitor.collapse_min_steps": Rule(kind="int", low=0),
}
#: One ``datasets`` entry: its keys, their kinds (from these values) and ranges.
DATASET_TEMPLATE: dict[str, Any] = {"name": "", "weight": 1.0, "index_path": "", "modality": "ct", "storage": "torch",
                                    "pixel_range": {"lower": 0.0, "upper": 0.0}, "norm": {"mean": 0.0, "std": 1.0},
                                    "root": None}
DATASET_RULES: dict[str, Rule] = {"weight": Rule(low=0, low_open=True), "storage": Rule(choices=("torch", "npy")),
                                  "norm.std": Rule(low=0, low_open=True), "root": Rule(kind="str")}
ARCH_KEYS = (
    "embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio", "layerscale", "rope_base",
    "rope_rescale_coords", "ffn_layer", "qkv_bias", "proj_bias", "ffn_bias", "num_register_tokens",
)


def packaged_config(name: str) -> Path:
    """Path of a config shipped with voxelfm (``default``, ``cpu_tiny``, ...)."""
    path = resources.files("voxelfm.ssl") / "configs" / f"{name}.yaml"
    return Path(str(path))


def default_config() -> dict[str, Any]:
    """The packaged defaults (mirror of the original ``ssl_default_config.yaml``)."""
    return read_yaml(packaged_config("default"))


#: Reads a YAML mapping (missing/invalid file: ConfigError naming it; ``5e-4`` is a number).
read_yaml = read_yaml_mapping


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: mappings merge key by key, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.epochs=10"`` -> (["optim", "epochs"], 10); the value is parsed as YAML."""
    return parse_assignment(text, flag="override", form="section.key=value", example="optim.epochs=10")


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys; list items by index, e.g. ``datasets.0.weight=2``)."""
    return apply_assignments(config, overrides, flag="override", form="section.key=value", example="optim.epochs=10")


def check_keys(config: Mapping[str, Any], reference: Mapping[str, Any], source: object, prefix: str = "") -> None:
    """Reject keys that the defaults do not know (typos) and values of the wrong kind or out of
    range (:data:`SSL_RULES`), one line naming the dotted key, the value and what is expected."""
    check_tree(config, reference, SSL_RULES, source=source, free=_FREE_KEYS, prefix=prefix)


def load_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None, overrides: Iterable[str] = (),
) -> dict[str, Any]:
    """Resolve a run configuration: defaults <- ``config`` (YAML path, packaged recipe name such as
    ``"cpu_tiny"``, or dict) <- ``overrides``.

    ``student.arch`` (a preset name) fills the architecture keys the user did not set. The result
    is validated (:func:`validate`) and fully explicit, ready to be saved in the run directory.
    """
    defaults = default_config()
    if config is None:
        user: dict[str, Any] = {}
        source: object = "config"
    elif isinstance(config, Mapping):
        user, source = copy.deepcopy(dict(config)), "config"
    else:
        path = Path(config)
        if not path.exists() and path.suffix == "" and packaged_config(str(config)).is_file():
            path = packaged_config(str(config))  # a packaged recipe by name: "default", "cpu_tiny"
        user, source = read_yaml(path), path
    check_keys(user, defaults, source)
    resolved = merge(defaults, user)
    overrides = list(overrides)
    # Overrides apply on top of the merged config, so `datasets.0.index_path=...` reaches the
    # default dataset entry; their keys are checked against the defaults like the file's.
    override_tree = apply_overrides({}, overrides)
    check_keys({k: v for k, v in override_tree.items() if k != "datasets"}, defaults, "override")
    resolved = apply_overrides(resolved, overrides)
    if isinstance(resolved.get("datasets"), list):
        # Each dataset (from the file or a `datasets=[...]` override) inherits the default pixel
        # range / normalisation unless it sets its own.
        template = {k: v for k, v in defaults["datasets"][0].items() if k not in ("name", "index_path")}
        resolved["datasets"] = [merge(template, ds) if isinstance(ds, Mapping) else ds for ds in resolved["datasets"]]
    user_student = set((user.get("student") or {}).keys()) | set((override_tree.get("student") or {}).keys())
    arch = resolved["student"].get("arch")
    if arch:
        from voxelfm.models import PRESETS

        if arch not in PRESETS:
            raise ConfigError(located(source, f"student.arch {arch!r} is not a preset ({', '.join(PRESETS)})"))
        preset = PRESETS[arch]
        for key in ARCH_KEYS:
            if key not in user_student and hasattr(preset, key):
                resolved["student"][key] = copy.deepcopy(getattr(preset, key))
    # One precision vocabulary for every command; the resolved config holds the canonical name.
    resolved["compute_precision"] = canonical_precision(
        resolved["compute_precision"], key="compute_precision",
        source="override" if "compute_precision" in override_tree else source)
    validate(resolved, source)
    return resolved


def as_size3(value: Any, what: str, source: object = "config") -> tuple[int, int, int]:
    """An int or a 3-sequence of ints -> (D, H, W)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value, value)
    if isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int) for v in value):
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    raise ConfigError(located(source, f"{what} must be an int or [D, H, W], got {value!r}"))


def crop_size_list(value: Any, what: str, source: object = "config") -> list[tuple[int, int, int]]:
    """One size (int / triple) or a list of sizes (multi-resolution) -> list of (D, H, W)."""
    if isinstance(value, list) and value and all(isinstance(v, list | tuple | int) for v in value) and (
        isinstance(value[0], list | tuple) or len(value) != 3
    ):
        return [as_size3(v, f"{what}[{i}]", source) for i, v in enumerate(value)]
    return [as_size3(value, what, source)]


def crop_pairs(config: Mapping[str, Any], source: object = "config") -> tuple[list, list, list[float]]:
    """(global sizes, local sizes, ratios) of the multi-resolution crop pairs, equal lengths."""
    crops = config["crops"]
    g = crop_size_list(crops["global_crops_size"], "crops.global_crops_size", source)
    loc = crop_size_list(crops["local_crops_size"], "crops.local_crops_size", source)
    if len(loc) == 1 and len(g) > 1:
        loc = loc * len(g)
    if len(g) == 1 and len(loc) > 1:
        g = g * len(loc)
    if len(g) != len(loc):
        raise ConfigError(located(source, f"crops: {len(g)} global sizes but {len(loc)} local sizes"))
    ratios = crops["crop_pairs_ratios"]
    ratios = [float(ratios)] * len(g) if isinstance(ratios, int | float) else [float(r) for r in ratios]
    if len(ratios) != len(g) or min(ratios) < 0 or sum(ratios) <= 0:
        raise ConfigError(located(source, f"crops.crop_pairs_ratios must be {len(g)} non-negative weights, got {crops['crop_pairs_ratios']!r}"))
    return g, loc, [r / sum(ratios) for r in ratios]


def validate(config: Mapping[str, Any], source: object = "config") -> None:
    """Check value ranges that would otherwise fail deep inside training."""
    problems: list[str] = []
    train, crops, student = config["train"], config["crops"], config["student"]
    if train["centering"] not in ("centering", "sinkhorn_knopp"):
        problems.append(f"train.centering must be centering|sinkhorn_knopp, got {train['centering']!r}")
    if train["distributed"] not in ("ddp", "fsdp"):
        problems.append(f"train.distributed must be ddp|fsdp, got {train['distributed']!r}")
    for key in ("batch_size_per_gpu", "grad_accum_steps", "official_epoch_length"):
        if not isinstance(train[key], int) or train[key] < 1:
            problems.append(f"train.{key} must be a positive integer, got {train[key]!r}")
    if train["max_steps"] is not None and (not isinstance(train["max_steps"], int) or train["max_steps"] < 1):
        problems.append(f"train.max_steps must be a positive integer or null, got {train['max_steps']!r}")
    if not isinstance(crops["local_crops_number"], int) or crops["local_crops_number"] < 0:
        problems.append(f"crops.local_crops_number must be >= 0, got {crops['local_crops_number']!r}")
    for key in ("global_crops_scale", "local_crops_scale"):
        lo, hi = (list(crops[key]) + [None, None])[:2]
        if not (isinstance(lo, int | float) and isinstance(hi, int | float) and 0 < lo <= hi):
            problems.append(f"crops.{key} must be [low, high] with 0 < low <= high, got {crops[key]!r}")
    lo, hi = config["ibot"]["mask_ratio_min_max"]
    if not 0 <= lo <= hi < 1:
        problems.append(f"ibot.mask_ratio_min_max must satisfy 0 <= min <= max < 1, got {[lo, hi]}")
    if not 0 <= config["ibot"]["mask_sample_probability"] <= 1:
        problems.append("ibot.mask_sample_probability must be in [0, 1]")
    if student["embed_dim"] % (6 * student["num_heads"]) != 0:
        problems.append(
            f"student.embed_dim ({student['embed_dim']}) must be a multiple of 6 x num_heads "
            f"({6 * student['num_heads']}) for 3D RoPE"
        )
    datasets = config["datasets"]
    if not isinstance(datasets, list) or not datasets:
        problems.append("datasets must be a non-empty list")
    else:
        for i, ds in enumerate(datasets):
            if not isinstance(ds, Mapping):
                problems.append(f"datasets[{i}] must be a mapping")
                continue
            # keys, kinds and ranges of the entry (unknown keys, a string weight, std <= 0, ...)
            check_tree(ds, DATASET_TEMPLATE, DATASET_RULES, source=source, prefix=f"datasets.{i}.")
    if problems:
        raise ConfigError(located(source, "; ".join(problems)))
    g, loc, _ = crop_pairs(config, source)
    p = student["patch_size"]
    for size in g:
        if any(s < p for s in size):
            raise ConfigError(located(source, f"global crop {size} is smaller than the patch size {p}"))
    for size in loc:
        if crops["local_crops_number"] and any(s < p for s in size):
            raise ConfigError(located(source, f"local crop {size} is smaller than the patch size {p}"))


def check_batch_size(config: Mapping[str, Any], world_size: int, source: object = "config") -> None:
    """The original's assertion ``total_batch_size == batch_size_per_gpu x grad_accum x world``."""
    train = config["train"]
    total = train.get("total_batch_size")
    expected = train["batch_size_per_gpu"] * train["grad_accum_steps"] * world_size
    if total is not None and total != expected:
        raise ConfigError(
            located(source, f"train.total_batch_size={total} but batch_size_per_gpu x grad_accum_steps x world "
                    f"= {train['batch_size_per_gpu']} x {train['grad_accum_steps']} x {world_size} = {expected} "
                    "(set train.total_batch_size=null to skip this check)")
        )


def save_config(config: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the resolved config atomically (YAML, keys in file order)."""
    from voxelfm.core.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(dict(config), sort_keys=False))
