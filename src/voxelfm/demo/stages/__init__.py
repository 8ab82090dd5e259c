"""The stages of ``voxelfm demo``, one module each, in the order they run."""

from __future__ import annotations

from voxelfm.core.stages import Stage
from voxelfm.demo.stages.cohort import CohortStage
from voxelfm.demo.stages.embed import EmbedStage
from voxelfm.demo.stages.pretrain import PretrainStage
from voxelfm.demo.stages.probes import ProbesStage
from voxelfm.demo.stages.render import RenderStage
from voxelfm.demo.stages.reportgen import ReportGenStage


def default_stages() -> list[Stage]:
    """cohort → pretrain → embed → probes → reportgen → render."""
    upstream: list[Stage] = [CohortStage(), PretrainStage(), EmbedStage(), ProbesStage(), ReportGenStage()]
    return [*upstream, RenderStage(upstream)]


__all__ = [
    "CohortStage",
    "EmbedStage",
    "PretrainStage",
    "ProbesStage",
    "RenderStage",
    "ReportGenStage",
    "default_stages",
]
