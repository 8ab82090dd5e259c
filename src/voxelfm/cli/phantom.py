"""``voxelfm phantom OUT_DIR --n N``: write the built-in synthetic chest-CT cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxelfm.cli.common import console, guarded


@guarded
def phantom(
    out_dir: Annotated[Path, typer.Argument(help="Output folder (created; an interrupted run resumes).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of scans.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same cohort.")] = 0,
    format: Annotated[str, typer.Option("--format", help="Scan format: nifti | dicom.")] = "nifti",
    size: Annotated[str, typer.Option(help="Voxel grid: tiny (CI) | small (~1.7 mm) | standard (~0.7 mm).")] = "small",
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: one per core).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete a previous cohort in OUT_DIR first.")] = False,
    prevalence: Annotated[str, typer.Option(help="Finding prevalences: clinical (CT-RATE-like 5-45 %) | "
                                                 "enriched (about 30 % each, for small studies).")] = "clinical",
    conspicuity: Annotated[float, typer.Option(help="0-1: move finding sizes and densities towards the severe end "
                                                    "of their clinical range (0 = typical; same patients).")] = 0.0,
) -> None:
    """Generate synthetic chest CT scans with labels, segmentations, survival and reports."""
    import time

    from voxelfm.core.progress import progress_bar
    from voxelfm.data.phantom import phantom_config, write_cohort

    config = phantom_config(prevalence, conspicuity)
    start = time.perf_counter()
    with progress_bar(console) as bar:
        task = bar.add_task("phantom", total=n)
        labels = write_cohort(out_dir, n=n, seed=seed, format=format, size=size, config=config, workers=workers,
                              overwrite=overwrite, progress=lambda done, total: bar.update(task, completed=done))
    console.print(f"wrote {n} scans to {out_dir} in {time.perf_counter() - start:.1f} s "
                  f"(labels: {labels.name}, reports.jsonl, dataset.md)")


def register(app: typer.Typer) -> None:
    app.command("phantom")(phantom)
