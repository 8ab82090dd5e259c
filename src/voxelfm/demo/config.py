"""Demo sizes: how big each step of ``voxelfm demo`` is.

* ``tiny`` — the end-to-end test (a couple of minutes on 2 CPU cores; numbers are noise).
* ``small`` — the default: about 20 minutes on 2 CPU cores, everything included, with a test
  split of 60 scans (enough to see a 0.05 AUROC difference between backbones on most tasks).
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
from dataclasses import dataclass
from typing import Any

from voxelfm.core.errors import ConfigError


@dataclass(frozen=True)
class CohortConfig:
    n_scans: int
    phantom_size: str = "small"  # voxel grid of the phantom generator (small | standard)
    format: str = "nifti"  # nifti | dicom
    seed: int = 7
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # patient-level train/val/test


@dataclass(frozen=True)
class PretrainConfig:
    preset: str = "vit-tiny"
    recipe: str = "cpu_small"  # packaged voxelfm.ssl config: the best single-machine recipe (docs/pretraining.md)
    max_patches: int = 512  # token budget of the preprocessing spec of both backbones
    spacing_mm: float = 3.0  # isotropic spacing of the cached pretraining volumes (≈ embedding grid)
    max_steps: int = 200
    overrides: tuple[str, ...] = ()  # extra key=value overrides for voxelfm.ssl.pretrain
    seed: int = 0


@dataclass(frozen=True)
class EmbedConfig:
    slab_thickness: int | None = None  # 2.5D slab thickness in voxels (None: the embedder's default)
    slab_overlap: int | None = None


@dataclass(frozen=True)
class ProbeConfig:
    epochs: int | None = None  # None: each task's default epochs (voxelfm.probes.config)
    seg_epochs: int = 6
    seg_downsample: int = 8  # segmentation target grid = preprocessed grid / this (CPU budget)
    seg_hidden_dim: int = 32
    seg_batch_size: int = 4
    hidden_dim: int = 128  # MLP heads
    qformer_hidden_dim: int = 256  # the Q-Former's width (at 128 it only partly finds a one-token signal)
    bootstrap: int = 1000
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    fraction_seeds: int = 2
    regression_epochs: int = 100  # few scans x 20 epochs is ~40 optimizer steps: too few to fit
    seed: int = 4


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
    probes: ProbeConfig
    reportgen: ReportGenConfig
    n_examples: int = 4  # retrieval / report / segmentation / PCA examples shown in the report

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, part: str | None = None) -> str:
        """Stable hash of the whole config or of one part (``cohort``, ``pretrain``, ...)."""
        data = self.to_dict() if part is None else self.to_dict()[part]
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SIZES: dict[str, DemoConfig] = {
    "tiny": DemoConfig(
        size="tiny",
        cohort=CohortConfig(n_scans=48, phantom_size="tiny"),
        pretrain=PretrainConfig(preset="vit-tiny", max_patches=216, spacing_mm=6.0, max_steps=4,
                                overrides=("train.batch_size_per_gpu=4",)),
        embed=EmbedConfig(),
        probes=ProbeConfig(epochs=3, seg_epochs=2, seg_downsample=4, hidden_dim=32, bootstrap=100,
                           fractions=(0.5, 1.0), fraction_seeds=1, regression_epochs=10),
        reportgen=ReportGenConfig(lm="tiny", stage1_epochs=1.0, stage2_epochs=1.0, max_new_tokens=24, n_generate=4),
        n_examples=2,
    ),
    "small": DemoConfig(
        size="small",
        cohort=CohortConfig(n_scans=256, split_fractions=(0.55, 0.2, 0.25)),  # 146 / 50 / 60 scans
        pretrain=PretrainConfig(max_steps=200),  # cpu_small's studied length
        embed=EmbedConfig(),
        probes=ProbeConfig(fraction_seeds=1),
        # The tiny LM, trained from scratch on the training impressions: SmolLM2-135M costs ~5 CPU-s
        # per optimizer step and ~2 CPU-s per report on this machine, so learning the reports' language
        # for three feature sources and writing 180 test reports would take ~40 CPU-minutes
        # (benchmarks/README.md, "voxelfm demo"). `standard` uses SmolLM2.
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
        probes=ProbeConfig(epochs=20, seg_epochs=60, seg_downsample=4, seg_hidden_dim=64, seg_batch_size=2,
                           hidden_dim=256, fractions=(0.2, 0.4, 0.6, 0.8, 1.0), fraction_seeds=3),
        reportgen=ReportGenConfig(stage1_epochs=2.0, stage2_epochs=10.0, max_new_tokens=128, text_field="report"),
        n_examples=6,
    ),
}


def get_config(size: str) -> DemoConfig:
    """The demo config of a named size."""
    if size not in SIZES:
        raise ConfigError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]
