"""``voxelfm evaluate SUITE.yaml``: run many probes × heads × backbones and tabulate them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxelfm.cli.common import guarded


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""

    @app.command("evaluate")
    @guarded
    def evaluate(
        suite: Annotated[Path, typer.Argument(help="Suite YAML (labels, stores, tasks).")],
        out: Annotated[Path, typer.Option("--out", help="Output directory.")],
        keep_going: Annotated[bool, typer.Option("--keep-going/--fail-fast", help="Continue after a failing task.")] = True,
        workers: Annotated[int | None, typer.Option(
            "--workers", min=1, help="Probe jobs run at once, each in its own single-threaded process; the numbers "
            "do not depend on it. Default: 2 on a machine with two or more cores, else 1.")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    ) -> None:
        """Run every task of SUITE; write run folders, summary.csv, differences.csv, figures/ and report.html
        (results table with 95% CIs, paired differences to the reference, CI bars, data-fraction curves,
        head comparison, failed tasks)."""
        from rich.console import Console
        from rich.table import Table

        from voxelfm.cli.common import setup_logging
        from voxelfm.probes.suite import run_suite
        from voxelfm.viz.results_report import HEADLINE, write_suite_report

        setup_logging(verbose)
        summary = run_suite(suite, out, keep_going=keep_going, workers=workers)
        table = Table(title="headline test metrics (95% bootstrap CI)", title_justify="left")
        for col in ("task", "head", "backbone", "metric", "value", "95% CI", "n"):
            table.add_column(col)
        for _, row in summary.iterrows():
            if row["metric"] not in HEADLINE.get(row["task"], []):
                continue
            ci = "—" if row["ci_low"] is None or row["ci_low"] != row["ci_low"] else f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            table.add_row(str(row["name"]), str(row["head"]), str(row["backbone"]), str(row["metric"]),
                          f"{row['value']:.3f}", ci, str(row["n"]))
        Console().print(table)
        typer.echo(f"summary written to {out / 'summary.csv'}; report: {write_suite_report(out)}")
