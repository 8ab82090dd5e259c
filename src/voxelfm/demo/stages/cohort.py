"""Stage 1: generate the synthetic chest-CT cohort (``voxelfm.data.phantom``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxelfm.core.stages import CheckResult, Stage
from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext


class CohortStage(Stage):
    name = "cohort"
    title = "Generate the synthetic CT cohort"
    config_parts = ("cohort",)

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.cohort_dir(ctx.out)]

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        from voxelfm.core.errors import ConfigError
        from voxelfm.core.progress import progress_bar
        from voxelfm.data.phantom import phantom_config, write_cohort

        cfg = ctx.config.cohort
        phantom = phantom_config(cfg.prevalence, cfg.conspicuity)  # None: the default phantom
        with progress_bar(ctx.console) as progress:
            task = progress.add_task(f"phantoms ({cfg.phantom_size}, {cfg.format})", total=cfg.n_scans)

            def generate(overwrite: bool) -> None:
                write_cohort(layout.cohort_dir(ctx.out), n=cfg.n_scans, seed=cfg.seed, format=cfg.format,
                             size=cfg.phantom_size, config=phantom, overwrite=overwrite,
                             split_fractions=cfg.split_fractions,
                             progress=lambda done, _total: progress.update(task, completed=done))

            try:
                generate(overwrite=False)  # resumes a cohort interrupted with the same settings
            except ConfigError:
                # The folder holds a cohort of another demo size: this demo owns it, so replace it.
                ctx.console.print("[yellow]cohort settings changed: regenerating the cohort[/]")
                generate(overwrite=True)
        return {"n_scans": cfg.n_scans, "format": cfg.format, "size": cfg.phantom_size,
                "prevalence": cfg.prevalence, "conspicuity": cfg.conspicuity}

    def check(self, ctx: DemoContext) -> CheckResult:
        from voxelfm.data.phantom import verify_cohort

        return CheckResult(verify_cohort(layout.cohort_dir(ctx.out), ctx.config.cohort.n_scans))
