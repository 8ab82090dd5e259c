"""Where each demo stage writes inside the output directory (one place, so stages agree)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voxelfm.demo.config import DemoConfig

#: Backbones with a model directory (pretrained, and the same architecture at random init).
MODEL_BACKBONES = ("pretrained", "random")
#: The non-learned baseline: HU histograms on the same patch grid (voxelfm.embed.histogram).
BASELINE = "histogram"
#: Every "backbone" whose features go through the probes, in table order.
BACKBONE_NAMES = (*MODEL_BACKBONES, BASELINE)
MODES = ("3d", "2.5d")


def comparator_names(config: DemoConfig) -> tuple[str, ...]:
    """Comparator backbones added with ``--backbones`` (random init; none by default)."""
    return tuple(c.name for c in config.embed.backbones)


def backbone_names(config: DemoConfig) -> tuple[str, ...]:
    """Every feature source of a run's comparison, in table order (the comparators last)."""
    return (*BACKBONE_NAMES, *comparator_names(config))


def embeddings(config: DemoConfig) -> tuple[tuple[str, str], ...]:
    """The stores a run embeds, as ``(backbone, mode)``: every source in 3D, the pretrained one in 2.5D too."""
    return (("pretrained", "3d"), ("random", "3d"), ("pretrained", "2.5d"), (BASELINE, "3d"),
            *((name, "3d") for name in comparator_names(config)))


def cohort_dir(out: Path) -> Path:
    return out / "cohort"


def pretrain_run_dir(out: Path) -> Path:
    return out / "pretrain"


def model_dir(out: Path, backbone: str) -> Path:
    return out / "models" / backbone


def store_dir(out: Path, backbone: str, mode: str = "3d") -> Path:
    return out / "embeddings" / f"{backbone}-{mode.replace('.', '')}"


def probes_dir(out: Path) -> Path:
    return out / "probes"


def probes_summary(out: Path) -> Path:
    return probes_dir(out) / "summary.json"


def reportgen_dir(out: Path) -> Path:
    return out / "reportgen"


def reportgen_summary(out: Path) -> Path:
    return reportgen_dir(out) / "summary.json"


def report_html(out: Path) -> Path:
    return out / "report.html"


def results_json(out: Path) -> Path:
    return out / "results.json"
