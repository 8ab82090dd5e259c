"""voxelfm.demo: the whole paper pipeline on one machine, ending in a readable HTML report.

Public API:

* :func:`run_demo(out, size="small", device="auto", force=())` -> :class:`DemoResult` — generate
  the synthetic cohort, pretrain a backbone, embed every scan with it and with the same
  architecture at random init (3D and chunked 2.5D), run all seven task categories on both, and
  write ``OUT/report.html`` (self-contained) and ``OUT/results.json``. Re-running resumes: stages
  whose outputs pass their checks are skipped.
* :data:`voxelfm.demo.config.SIZES` — ``tiny`` (tests), ``small`` (< 20 min on 2 CPU cores),
  ``standard`` (GPU).
* Stages run on :mod:`voxelfm.core.stages` (``Stage``, ``Pipeline``, ``CheckResult``), the library's
  resumable stage framework.
* :mod:`voxelfm.demo.results` — the ``results.json`` schema and its validator.

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
