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
        size: str = typer.Option("small", "--size", help="tiny | small (about 15 min on 2 idle CPU cores) | standard (GPU)."),
        device: str = typer.Option("auto", "--device", help="cpu | cuda | cuda:N | auto."),
        force: list[str] = typer.Option(
            [], "--force", help="Re-run this stage and every later one (repeatable): "
            "cohort, pretrain, embed, probes, reportgen, render."
        ),
        backbones: str = typer.Option(
            "", "--backbones", help="Comma-separated comparator backbones to add at random init, reduced for a "
            "CPU: m3d-clip, ct-clip, merlin, radfm (any subset; none by default)."
        ),
        workers: int = typer.Option(
            0, "--workers", help="Processes for the probes and report generation (0: two on a machine with two "
            "or more cores). Every probe runs single-threaded either way, so the numbers do not change."
        ),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Generate a synthetic CT cohort, pretrain a backbone, embed, run all seven task
        categories on pretrained vs random-init vs HU-histogram features, and write OUT/report.html
        + results.json. Every stage is budgeted in steps, so the same size gives the same numbers.
        ``--backbones`` adds the paper's comparator architectures (random init) to the comparison."""
        setup_logging(verbose)
        from voxelfm.demo import run_demo

        chosen = tuple(b.strip() for b in backbones.split(",") if b.strip())
        result = run_demo(out, size=size, device=device, force=force, console=console, backbones=chosen,
                          workers=workers or None)
        console.print(f"[bold green]report:[/] {result.report_html}")
        console.print(f"[bold green]results:[/] {result.results_json}")
