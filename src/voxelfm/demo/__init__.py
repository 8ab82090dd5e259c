"""voxelfm.demo: the whole paper pipeline on one machine, ending in a readable HTML report.

:func:`run_demo` generates the synthetic cohort, pretrains a backbone, embeds every scan with it,
its random-init twin and the HU-histogram baseline, runs all seven task categories on them and
writes ``OUT/report.html`` (self-contained) and ``OUT/results.json`` (schema and validator:
:mod:`voxelfm.demo.results`). Sizes: :data:`voxelfm.demo.config.SIZES`. The stages
(:mod:`voxelfm.demo.stages`) run on the library's resumable :mod:`voxelfm.core.stages`: re-running
skips those whose outputs pass their checks.

CLI: ``voxelfm demo [--out DIR] [--size tiny|small|standard] [--device cpu|cuda|auto]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console


@dataclass(frozen=True)
class DemoResult:
    """Where a finished demo wrote its report and results, and the wall time of each stage."""

    out: Path
    report_html: Path
    results_json: Path
    timings: dict[str, float]


def run_demo(
    out: str | Path, *, size: str = "small", device: str = "auto", force: list[str] | tuple[str, ...] = (),
    console: Console | None = None, backbones: list[str] | tuple[str, ...] = (), workers: int | None = None,
) -> DemoResult:
    """Run (or resume) the demo into ``out``; see the module docstring. ``backbones`` adds comparator
    backbones (``m3d-clip``, ``ct-clip``, ``merlin``, ``radfm``) at random init, reduced for a CPU.
    ``workers``: processes of the probes and report generation (None: 2 on 2+ cores; same metrics)."""
    from voxelfm.core.device import resolve_device
    from voxelfm.core.stages import Pipeline
    from voxelfm.demo import layout
    from voxelfm.demo.config import DemoContext, get_config
    from voxelfm.demo.stages import default_stages

    out = Path(out).expanduser().resolve()
    ctx = DemoContext(out=out, config=get_config(size, tuple(backbones), workers), device=str(resolve_device(device)),
                      console=console or Console(stderr=True))
    pipeline = Pipeline(default_stages())
    records = pipeline.run(ctx, force=tuple(force))
    return DemoResult(out=out, report_html=layout.report_html(out), results_json=layout.results_json(out),
                      timings={r.name: r.seconds for r in records})
