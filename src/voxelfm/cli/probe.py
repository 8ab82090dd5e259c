"""``voxelfm probe TASK``: train and evaluate one probe on frozen features from an embedding store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from voxelfm.cli.common import guarded


def parse_overrides(config_file: Path | None, sets: list[str] | None) -> dict[str, Any]:
    """Merge a YAML config file and ``key=value`` overrides (dotted keys, YAML values); the probe
    options check both (:mod:`voxelfm.core.config_check`, like every other config)."""
    from voxelfm.core.config_check import apply_assignments, read_yaml_mapping

    data = read_yaml_mapping(config_file) if config_file is not None else {}
    return apply_assignments(data, sets or [])


def print_metrics(result: Any, *, all_metrics: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.task} ({result.head}) — test metrics, 95% bootstrap CI", title_justify="left")
    for col in ("metric", "value", "95% CI", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, ci in result.metrics.items():
        if not all_metrics and "/" in name and not name.startswith(("macro/", "same_patient/")):
            continue
        low, high = ci.to_dict()["ci_low"], ci.to_dict()["ci_high"]
        interval = "—" if low is None else f"[{low:.3f}, {high:.3f}]"
        table.add_row(name, f"{ci.value:.3f}", interval, str(ci.n))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the ``probe`` command to ``app``."""

    @app.command("probe")
    @guarded
    def probe(
        task: Annotated[str, typer.Argument(help="classification | knn | regression | survival | retrieval | localisation | segmentation")],
        store: Annotated[Path, typer.Option("--store", help="Embedding store directory.")],
        labels: Annotated[Path, typer.Option("--labels", help="Labels CSV with a scan_id column.")],
        out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
        target: Annotated[list[str] | None, typer.Option("--target", help="Label column(s); repeat for several.")] = None,
        head: Annotated[str | None, typer.Option("--head", help="mlp (CLS) or qformer (patch tokens).")] = None,
        config: Annotated[Path | None, typer.Option("--config", help="YAML with probe options.")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override an option: key=value (train.epochs=5).")] = None,
        split_column: Annotated[str, typer.Option("--split-column", help="Column with train/val/test.")] = "split",
        split_dir: Annotated[Path | None, typer.Option("--split-dir", help="Folder with train.csv, val.csv, test.csv.")] = None,
        bootstrap: Annotated[int | None, typer.Option("--bootstrap", help="Bootstrap resamples for CIs.")] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs.")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Training seed.")] = None,
        figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write figures.")] = True,
        all_metrics: Annotated[bool, typer.Option("--all", help="Print per-label metrics too.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    ) -> None:
        """Train a probe on frozen features and write config, history, weights, predictions, metrics, figures."""
        from voxelfm.cli.common import setup_logging
        from voxelfm.probes import run_probe

        setup_logging(verbose)
        overrides = parse_overrides(config, set_)
        if bootstrap is not None:
            overrides["bootstrap"] = bootstrap
        if epochs is not None:
            overrides.setdefault("train", {})["epochs"] = epochs
        if seed is not None:
            overrides.setdefault("train", {})["seed"] = seed
        result = run_probe(task, store, labels, target=list(target or []) or None, head=head, out_dir=out,
                           config=overrides, split_column=split_column, split_dir=split_dir, figures=figures)
        print_metrics(result, all_metrics=all_metrics)
        typer.echo(f"run written to {out}")
