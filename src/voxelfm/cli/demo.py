"""``voxelfm demo``: the whole paper pipeline on built-in synthetic data, with an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from voxelfm.cli.common import console, guarded, setup_logging


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @guarded
    def demo(
        out: Path = typer.Option(Path("voxelfm-demo"), "--out", "-o", help="Output directory (re-running resumes)."),
        size: str = typer.Option("small", "--size", help="tiny | small (about 20 min on 2 idle CPU cores) | standard (GPU)."),
        device: str = typer.Option("auto", "--device", help="cpu | cuda | auto."),
        force: list[str] = typer.Option(
            [], "--force", help="Re-run this stage and every later one (repeatable): "
            "cohort, pretrain, embed, probes, reportgen, render."
        ),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Generate a synthetic CT cohort, pretrain a backbone, embed, run all seven task
        categories on pretrained vs random-init vs HU-histogram features, and write OUT/report.html
        + results.json. Every stage is budgeted in steps, so the same size gives the same numbers."""
        setup_logging(verbose)
        from voxelfm.demo import run_demo

        result = run_demo(out, size=size, device=device, force=force, console=console)
        console.print(f"[bold green]report:[/] {result.report_html}")
        console.print(f"[bold green]results:[/] {result.results_json}")
