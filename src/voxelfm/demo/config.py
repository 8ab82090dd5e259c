"""Demo sizes: how big each step of ``voxelfm demo`` is.

* ``tiny`` — the end-to-end test (a couple of minutes on 2 CPU cores; numbers are noise).
* ``small`` — the default: about 14–16 minutes of stages on 2 idle CPU cores (13.4 and 15.6 measured
  word for word on 2026-12-02, 500 pretraining steps; goal: 20), everything included, with a test
  split of 60 scans (the report states the smallest difference it can detect: about 0.29 AUROC in
  the measured run, far from 0.05).
* ``standard`` — a larger cohort, a larger backbone and longer training, for a machine with a GPU.

Each stage hashes only the part of the config it uses, so changing, say, the probe epochs re-runs
the probe stage and what follows it but keeps the cohort, the backbone and the embeddings.

Every training stage is budgeted in steps or epochs, never in minutes, so the same size and seed
give the same numbers on a fast or a busy machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from voxelfm.core.errors import ConfigError
from voxelfm.core.stages import StageContext


@dataclass(frozen=True)
class CohortConfig:
    n_scans: int
    phantom_size: str = "small"  # voxel grid of the phantom generator (small | standard)
    format: str = "nifti"  # nifti | dicom
    seed: int = 7
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # patient-level train/val/test
    prevalence: str = "clinical"  # clinical (CT-RATE-like) | enriched (~30 % each finding); docs/phantom.md
    conspicuity: float = 0.0  # 0-1: finding sizes/densities towards the severe clinical end; docs/phantom.md


@dataclass(frozen=True)
class PretrainConfig:
    preset: str = "vit-tiny"
    recipe: str = "cpu_small"  # packaged voxelfm.ssl config: the best single-machine recipe (docs/pretraining.md)
    max_patches: int = 512  # token budget of the preprocessing spec of both backbones
    spacing_mm: float = 3.0  # isotropic spacing of the cached pretraining volumes (≈ embedding grid)
    max_steps: int = 500  # cpu_small's shipped length: the shortest that beat random init (docs/pretraining.md)
    overrides: tuple[str, ...] = ()  # extra key=value overrides for voxelfm.ssl.pretrain
    seed: int = 0
    threads: int = 2  # torch threads on a CPU, fixed so the backbone does not depend on the core count


@dataclass(frozen=True)
class ComparatorConfig:
    """A comparator backbone at random init, reduced for a CPU: ``sets`` (``--set`` overrides) and
    ``spec`` (its ``NativeSpec`` parameters) as :mod:`voxelfm.models.backbones.reduced` gives them,
    copied here so that the embed stage's fingerprint covers them."""

    name: str
    sets: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True)
class EmbedConfig:
    slab_thickness: int | None = None  # 2.5D slab thickness in voxels (None: the embedder's default)
    slab_overlap: int | None = None
    backbones: tuple[ComparatorConfig, ...] = ()  # comparators added by --backbones (none by default)


@dataclass(frozen=True)
class DemoProbeBudget:
    """How much probe training the demo affords (not :class:`voxelfm.probes.ProbeConfig`, which it sets per run)."""

    epochs: int | None = None  # None: each task's default epochs (voxelfm.probes.config); classification: cls_epochs
    # The classification recipe (MLP on CLS and Q-Former on patches alike; classification_options).
    cls_epochs: int = 20
    cls_batch_size: int = 32
    cls_lr: float = 1e-3
    cls_min_lr: float = 1e-5
    cls_warmup_fraction: float = 0.1  # of the epochs (floored, at least one); a cosine decay over the rest
    seg_epochs: int = 6
    seg_downsample: int = 8  # segmentation target grid = preprocessed grid / this (CPU budget)
    seg_hidden_dim: int = 32
    seg_batch_size: int = 4
    hidden_dim: int = 128  # MLP heads
    # The Q-Former: one query (the paper's head), width 64, a linear skip from the CLS with the attention
    # branch zero-initialised, whole-token dropout (why each: docs/demo.md, "Probes").
    qformer_hidden_dim: int = 64
    qformer_queries: int = 1
    qformer_skip: str | None = "cls"
    qformer_token_dropout: float = 0.25
    qformer_feature_dropout: float = 0.0
    bootstrap: int = 1000
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    fraction_seeds: int = 2
    regression_epochs: int = 100  # few scans x 20 epochs is ~40 optimizer steps: too few to fit
    loc_epochs: int | None = None  # localisation; None: the task default (20); `small`: 10 (docs/demo.md, "Probes")
    seed: int = 4

    def classification_options(self) -> dict[str, Any]:
        """The classification probes' ``voxelfm.probes.run_probe`` config (MLP head parameters).

        About 150 optimizer steps per probe on ~150 training scans: class-balanced batches with the
        minority class over-sampled (the original's under-sampling gives one batch per epoch on a
        cohort this small, i.e. ten steps in all), a linear warm-up then a cosine decay, the best
        validation-AUROC epoch kept. Budgeted in epochs, so the result does not depend on the machine.
        """
        epochs = self.cls_epochs if self.epochs is None else int(self.epochs)
        warm = max(1, int(round(epochs * self.cls_warmup_fraction, 6)))
        return {"bootstrap": self.bootstrap, "bootstrap_seed": self.seed, "balance": "oversample",
                "head_params": {"hidden_dim": self.hidden_dim},
                "train": {"epochs": epochs, "batch_size": self.cls_batch_size, "lr": self.cls_lr, "warmup_epochs": warm,
                          "cosine_epochs": epochs - warm, "min_lr": self.cls_min_lr, "seed": self.seed}}

    def qformer_head_params(self) -> dict[str, Any]:
        """The Q-Former's ``head_params`` (voxelfm.probes.heads.QFormerHead)."""
        return {"hidden_dim": self.qformer_hidden_dim, "num_queries": self.qformer_queries, "skip": self.qformer_skip,
                "token_dropout": self.qformer_token_dropout, "feature_dropout": self.qformer_feature_dropout}


@dataclass(frozen=True)
class ReportGenConfig:
    lm: str = "auto"  # "auto": SmolLM2 when cached, otherwise the offline tiny LM; "tiny"; or a directory
    stage1_epochs: float = 2.0
    stage2_epochs: float = 4.0
    stage2_lr: float | None = None  # None: voxelfm.report's default (3e-4, for LoRA on a pretrained LM)
    num_queries: int = 32  # vision tokens the projector gives the LM
    max_new_tokens: int = 64
    n_generate: int | None = None  # test scans to generate for (None: all)
    text_field: str = "impression"  # target text: the impression lists abnormal findings only, like
    #                                 the paper's restructured reports (and is short enough for a CPU)
    seed: int = 4


@dataclass(frozen=True)
class DemoConfig:
    """Everything that decides what the demo computes (not where it writes or on which device)."""

    size: str
    cohort: CohortConfig
    pretrain: PretrainConfig
    embed: EmbedConfig
    probes: DemoProbeBudget
    reportgen: ReportGenConfig
    n_examples: int = 4  # retrieval / report / segmentation / PCA examples shown in the report
    # Worker processes of the probes and report-generation stages. Not part of any stage's fingerprint:
    # every item runs single-threaded in either case, so the metrics do not depend on it (tested).
    workers: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, part: str | None = None) -> str:
        """Stable hash of the whole config or of one part (``cohort``, ``pretrain``, ...)."""
        data = self.to_dict() if part is None else self.to_dict()[part]
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


#: What every demo stage sees (voxelfm.core.stages): the output directory, this config, device, console.
DemoContext = StageContext[DemoConfig]


SIZES: dict[str, DemoConfig] = {
    "tiny": DemoConfig(
        size="tiny",
        cohort=CohortConfig(n_scans=48, phantom_size="tiny"),
        pretrain=PretrainConfig(preset="vit-tiny", max_patches=216, spacing_mm=6.0, max_steps=4, threads=1,
                                overrides=("train.batch_size_per_gpu=4",)),
        embed=EmbedConfig(),
        probes=DemoProbeBudget(epochs=3, seg_epochs=2, seg_downsample=4, hidden_dim=32, bootstrap=100,
                           fractions=(0.5, 1.0), fraction_seeds=1, regression_epochs=10),
        reportgen=ReportGenConfig(lm="tiny", stage1_epochs=1.0, stage2_epochs=1.0, max_new_tokens=24, n_generate=4),
        n_examples=2,
    ),
    "small": DemoConfig(
        size="small",
        # 146 / 50 / 60 scans; findings enriched (~30 % each) and at the severe end of their clinical
        # ranges, so frozen features can see them at 512 tokens (docs/phantom.md, benchmarks/README.md)
        cohort=CohortConfig(n_scans=256, split_fractions=(0.55, 0.2, 0.25), prevalence="enriched", conspicuity=1.0),
        pretrain=PretrainConfig(),  # cpu_small as shipped: 500 steps, two threads (~7 min on 2 idle cores)
        embed=EmbedConfig(),
        probes=DemoProbeBudget(fraction_seeds=1, loc_epochs=10),
        # The tiny LM, trained from scratch on the training impressions: SmolLM2-135M would take ~40
        # CPU-minutes for three sources and 180 reports (benchmarks/README.md, "voxelfm demo"); `standard`
        # uses it. Stage 2 needs its 8 epochs (at 6, ROUGE-L fell from 0.31 to 0.18).
        reportgen=ReportGenConfig(lm="tiny", stage1_epochs=1.0, stage2_epochs=8.0, stage2_lr=1e-3,
                                  num_queries=16, max_new_tokens=32),
    ),
    "standard": DemoConfig(
        size="standard",
        cohort=CohortConfig(n_scans=400, phantom_size="standard", format="dicom"),
        pretrain=PretrainConfig(preset="vit-small", recipe="cpu_tiny", max_patches=4096, spacing_mm=1.5, max_steps=5000,
                                overrides=("train.batch_size_per_gpu=32", "crops.global_crops_size=112",
                                           "crops.local_crops_size=56", "crops.local_crops_number=8")),
        embed=EmbedConfig(),
        probes=DemoProbeBudget(epochs=20, seg_epochs=60, seg_downsample=4, seg_hidden_dim=64, seg_batch_size=2,
                           hidden_dim=256, fractions=(0.2, 0.4, 0.6, 0.8, 1.0), fraction_seeds=3),
        reportgen=ReportGenConfig(stage1_epochs=2.0, stage2_epochs=10.0, max_new_tokens=128, text_field="report"),
        n_examples=6,
    ),
}


#: The reduced configuration (:mod:`voxelfm.models.backbones.reduced`) of the comparators that
#: ``--backbones`` adds, per demo size.
COMPARATOR_PRESET = {"tiny": "test", "small": "cpu", "standard": "cpu"}


def get_config(size: str, backbones: tuple[str, ...] | list[str] = (), workers: int | None = None) -> DemoConfig:
    """The demo config of a named size, with the named comparator backbones added (``--backbones``) and
    ``workers`` processes for the probes and report generation (None: two where there are two cores)."""
    if size not in SIZES:
        raise ConfigError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    from voxelfm.core.parallel import default_workers

    if workers is not None and int(workers) < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    config = dataclasses.replace(SIZES[size], workers=default_workers() if workers is None else int(workers))
    if not backbones:
        return config
    from voxelfm.models.backbones.reduced import reduced_config, reduced_names

    preset = COMPARATOR_PRESET[size]
    known = reduced_names(preset)
    unknown = [b for b in backbones if b not in known]
    if unknown:
        raise ConfigError(f"unknown comparator backbone(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    # in the order given, each once
    chosen = tuple(ComparatorConfig(b, *reduced_config(b, preset)) for b in dict.fromkeys(backbones))
    return dataclasses.replace(config, embed=dataclasses.replace(config.embed, backbones=chosen))
