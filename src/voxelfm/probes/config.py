"""Probe configuration: one flat dataclass with per-task defaults (docs/original.md §4 recipes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from voxelfm.core.config_check import Rule, check_dataclass, check_known_keys
from voxelfm.core.errors import ConfigError
from voxelfm.probes.trainer import TrainConfig

TASKS: tuple[str, ...] = ("classification", "knn", "regression", "survival", "retrieval", "localisation", "segmentation")
HEADS: tuple[str, ...] = ("mlp", "qformer")

#: Per-task training defaults. Deviations from the original, on purpose: AdamW everywhere (the
#: original used SGD for regression/survival, which barely moves at lr 1e-3 on small cohorts) and
#: the segmentation schedule shortened for CPU; every value can be overridden.
#: Head name recorded for tasks whose "head" is fixed (or is not a trained head at all).
DEFAULT_HEADS: dict[str, str] = {"segmentation": "decoder", "localisation": "localiser", "knn": "knn",
                                 "retrieval": "faiss"}

TASK_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "classification": {"epochs": 10, "batch_size": 64, "lr": 1e-3},
    "regression": {"epochs": 20, "batch_size": 64, "lr": 1e-3},
    "survival": {"epochs": 20, "batch_size": 64, "lr": 1e-3},
    "localisation": {"epochs": 20, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-2},
    "segmentation": {"epochs": 40, "batch_size": 2, "lr": 1e-3, "weight_decay": 1e-2, "noise_p": 0.2},
}


#: Ranges and choices of the probe options (types come from the annotations of ProbeConfig).
PROBE_RULES: dict[str, Rule] = {
    "balance": Rule(choices=("undersample", "oversample")), "bootstrap": Rule(low=1),
    "multilabel": Rule(choices=("per-label", "shared")), "threshold": Rule(choices=("f1", "youden")),
    "loss": Rule(choices=("mse", "huber")), "ties": Rule(choices=("efron", "breslow")),
    "horizons": Rule(low=0, low_open=True), "min_events": Rule(low=1),
    "knn_metric": Rule(choices=("cosine", "euclidean")), "knn_k": Rule(low=1),
    "feature": Rule(choices=("cls", "mean_patch")), "n_negatives": Rule(low=0),
    "retrieval_split": Rule(choices=("train", "val", "test")), "retrieval_ks": Rule(low=1),
    "coordinates": Rule(choices=("world", "normalised")), "radius_mm": Rule(low=0, low_open=True),
    "num_classes": Rule(low=2), "target_downsample": Rule(low=1),
}


@dataclass
class ProbeConfig:
    """Everything a probe run needs besides data; ``from_dict`` rejects unknown keys."""

    head: str = "mlp"
    head_params: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    balanced: bool = True
    balance: str = "undersample"  # undersample (original) | oversample (more steps on small cohorts)
    bootstrap: int = 1000
    bootstrap_seed: int = 4
    # classification
    multilabel: str = "per-label"  # or "shared": one head with one output per label
    threshold: str = "f1"  # validation threshold criterion: f1 | youden
    # regression
    loss: str = "mse"  # mse | huber
    # survival
    time_column: str = "time"
    event_column: str = "event"
    ties: str = "efron"
    horizons: list[float] = field(default_factory=list)
    min_events: int = 2
    # kNN
    knn_metric: str = "cosine"
    knn_k: list[int] = field(default_factory=lambda: [1, 3, 5, 7, 9, 11, 15, 21, 31, 51, 75, 101])
    # retrieval
    feature: str = "cls"  # cls | mean_patch
    n_negatives: int = 99
    retrieval_split: str = "test"
    patient_column: str = "patient_id"
    retrieval_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    # localisation
    coordinate_columns: list[str] = field(default_factory=lambda: ["nodule_x_mm", "nodule_y_mm", "nodule_z_mm"])
    coordinates: str = "world"  # world (LPS mm x,y,z) | normalised ((z,y,x) in [0,1] of the input grid)
    radius_mm: float = 10.0
    # segmentation
    label_path_column: str = "label_path"
    label_root: str | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    target_downsample: int = 4  # train/evaluate on the input grid downsampled by this factor
    dice_loss: bool = False
    write_masks: bool = True

    @classmethod
    def for_task(cls, task: str, overrides: dict[str, Any] | None = None) -> ProbeConfig:
        """Task defaults updated with ``overrides`` (a nested ``train`` mapping is merged)."""
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        data = dict(overrides or {})
        train = dict(TASK_TRAIN_DEFAULTS.get(task, {}))
        given = data.pop("train", None) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"train must be a mapping of training options (train.epochs, train.lr, ...), got {given!r}")
        train.update(given)
        check_known_keys(data, [f.name for f in fields(cls) if f.name != "train"] + ["train.*"], what="probe option")
        config = cls(**data, train=TrainConfig.from_dict(train))
        if "head" not in data and task in DEFAULT_HEADS:
            config.head = DEFAULT_HEADS[task]
        config.validate(task)
        return config

    def validate(self, task: str) -> None:
        allowed = {"classification": HEADS, "regression": HEADS, "survival": HEADS, "localisation": ("localiser",),
                   "segmentation": ("decoder",), "knn": (self.head,), "retrieval": (self.head,)}[task]
        check_dataclass(self, PROBE_RULES)  # types, ranges and choices of every option
        if self.head not in allowed:
            raise ConfigError(f"head {self.head!r} does not fit task {task!r}; use one of {list(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["DEFAULT_HEADS", "HEADS", "TASKS", "TASK_TRAIN_DEFAULTS", "ProbeConfig"]
