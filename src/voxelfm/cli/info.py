"""``voxelfm info PATH``: what voxelfm reads from a CT source, before anything is computed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from voxelfm.cli.common import guarded


def _parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    from voxelfm.core.errors import ConfigError

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace("x", ",").split(","))
    except ValueError as exc:
        raise ConfigError(f"--spacing must be 'z,y,x' in mm, got {text!r}") from exc
    if len(values) != 3:
        raise ConfigError(f"--spacing must be 'z,y,x' in mm, got {text!r}")
    return values  # type: ignore[return-value]


def describe_source(
    path: Path, *, series_uid: str | None = None, spacing: tuple[float, float, float] | None = None,
    allow_non_hu: bool = False, allow_missing_slices: bool = False,
) -> dict[str, Any]:
    """Load ``path`` and return the JSON-ready description printed by ``voxelfm info``."""
    from voxelfm.io import load_ct

    volume = load_ct(path, series_uid=series_uid, spacing=spacing, allow_non_hu=allow_non_hu,
                     allow_missing_slices=allow_missing_slices)
    info = volume.describe()
    info["series"] = volume.metadata.get("series", [])
    info["stored_orientation"] = volume.metadata.get("stored_orientation", info["orientation"])
    info["dtype"] = str(volume.array.dtype)
    info["extent_mm"] = [round(n * s, 3) for n, s in zip(volume.shape, volume.spacing, strict=True)]
    return info


def _print_human(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if info["series"]:
        table = Table(title="DICOM series", title_justify="left")
        table.add_column("")
        table.add_column("SeriesInstanceUID", overflow="fold")  # full UIDs: users pass them to --series
        for column in ("modality", "slices", "description", "status"):
            table.add_column(column, overflow="fold")
        for s in info["series"]:
            status = "chosen" if s["chosen"] else (s["skipped"] or "")
            table.add_row("*" if s["chosen"] else "", s["uid"], s["modality"], str(s["n_slices"]),
                          s["description"], status)
        console.print(table)
    fmt = ", ".join
    console.print(f"source       {info['source']}", highlight=False, soft_wrap=True)
    if info.get("series_uid"):
        console.print(f"series       {info['series_uid']} ({info['modality']})", highlight=False, soft_wrap=True)
    console.print(f"shape        (z, y, x) = ({fmt(str(n) for n in info['shape'])})", highlight=False, soft_wrap=True)
    console.print(f"spacing      (z, y, x) = ({fmt(f'{s:.4g}' for s in info['spacing'])}) mm", highlight=False, soft_wrap=True)
    console.print(f"extent       ({fmt(f'{e:.1f}' for e in info['extent_mm'])}) mm", highlight=False, soft_wrap=True)
    console.print(f"origin       LPS ({fmt(f'{o:.2f}' for o in info['origin'])}) mm", highlight=False, soft_wrap=True)
    console.print(f"orientation  {info['orientation']} (index axes i, j, k; stored as {info['stored_orientation']})",
                  highlight=False, soft_wrap=True)
    console.print(f"HU range     [{info['hu_min']:.1f}, {info['hu_max']:.1f}]", highlight=False, soft_wrap=True)
    for warning in info["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``info`` command to ``app``."""

    @app.command("info")
    @guarded
    def info(
        path: Annotated[Path, typer.Argument(help="DICOM folder or zip, NIfTI, MHA/MHD, NRRD, .npy/.npz/.pt")],
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        series: Annotated[str | None, typer.Option("--series", help="SeriesInstanceUID to load.")] = None,
        spacing: Annotated[str | None, typer.Option("--spacing", help="z,y,x mm (required for array files).")] = None,
        allow_non_hu: Annotated[bool, typer.Option("--allow-non-hu", help="Skip the Hounsfield-unit check.")] = False,
        allow_missing_slices: Annotated[bool, typer.Option(
            "--allow-missing-slices", help="Load a DICOM series without its unreadable slice files (named in a warning).",
        )] = False,
    ) -> None:
        """Show the series found, the one chosen, shape, spacing, orientation, HU range and warnings."""
        data = describe_source(path, series_uid=series, spacing=_parse_spacing(spacing), allow_non_hu=allow_non_hu,
                               allow_missing_slices=allow_missing_slices)
        if as_json:
            typer.echo(json.dumps(data))
        else:
            _print_human(data)
