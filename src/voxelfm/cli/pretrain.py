"""``voxelfm pretrain``: self-supervised pretraining (DINO + iBOT + KoLeo) on your own CT.

* ``voxelfm pretrain CONFIG.yaml [key=value ...]`` (same as ``voxelfm pretrain run ...``)
* ``voxelfm pretrain prepare INPUT... --out DIR``
* ``voxelfm pretrain export RUN_DIR OUT_DIR``
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from voxelfm.cli.common import console, exit_if_some_failed, guarded, setup_logging


class _RunByDefault(TyperGroup):
    """A group whose first argument, when it is not a sub-command, is a config for ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


pretrain_app = typer.Typer(
    cls=_RunByDefault, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Pretrain a backbone on unlabelled CT: `voxelfm pretrain CONFIG.yaml key=value...`, "
         "`voxelfm pretrain prepare INPUT... --out DIR`, `voxelfm pretrain export RUN_DIR OUT_DIR`.",
)


@pretrain_app.command("run")
@guarded
def run_command(
    config: Annotated[str, typer.Argument(help="YAML config (original ssl_default_config keys), or a packaged "
                                               "recipe name: default, cpu_tiny.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. train.max_steps=200.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default: train.output_dir).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train (or resume) a run; under torchrun every rank runs this and rank 0 writes."""
    setup_logging(verbose)
    from voxelfm.ssl.config import packaged_config
    from voxelfm.ssl.trainer import finish_distributed, pretrain

    source: Any = config
    if not Path(config).exists() and packaged_config(config).is_file():
        source = packaged_config(config)
    run_dir = pretrain(source, overrides or [], out_dir=out)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        console.print(f"run directory: {run_dir}", highlight=False)
    finish_distributed(0)


@pretrain_app.command("prepare")
@guarded
def prepare_command(
    inputs: Annotated[list[Path], typer.Argument(help="CT files or folders (anything `voxelfm info` reads).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (volumes/, index.csv, prepare_log.jsonl).")],
    spacing: Annotated[float | None, typer.Option(help="Fixed isotropic spacing in mm (default: the original "
                                                       "rule max(min spacing, 0.75 mm)).")] = None,
    max_side: Annotated[int | None, typer.Option(help="Shrink so the longest side is at most this many voxels.")] = None,
    crop_background: Annotated[bool, typer.Option(help="Crop air and table around the body.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Retry scans that failed in an earlier run even if their "
                                                    "files did not change (changed ones are always retried).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Cache CT scans as memory-mappable isotropic HU volumes (resumable; bad scans are skipped).

    Exit status 2 when the run finished but some scans failed (in this run, or in an earlier run
    and not retried).
    """
    setup_logging(verbose)
    from rich.progress import Progress

    from voxelfm.ssl.prepare import PrepareSettings, prepare_volumes

    settings = PrepareSettings(crop_background=crop_background, spacing_mm=spacing, max_side=max_side)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("preparing", total=None)
        counts = prepare_volumes(inputs, out, settings=settings, retry_failed=retry_failed,
                                 progress=lambda i, n, sid: bar.update(task, completed=i, total=n, description=sid))
    console.print(
        f"{counts['found']} scans: {counts['prepared']} prepared, {counts['skipped']} already done, "
        f"{counts['failed']} failed -> {counts['indexed']} in {out / 'index.csv'}", highlight=False)
    if counts["changed"] or counts["retried"]:
        console.print(f"prepared again: {counts['changed']} whose source changed, {counts['retried']} that had "
                      "failed before", highlight=False)
    if counts["earlier_failed"]:
        console.print(f"[yellow]{counts['earlier_failed']} scan(s) failed in an earlier run[/] and were not retried "
                      f"(unchanged files; see {out / 'prepare_log.jsonl'}, or use --retry-failed)", highlight=False)
    exit_if_some_failed(counts["failed"] + counts["earlier_failed"], str(out))


@pretrain_app.command("export")
@guarded
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A pretraining run directory.")],
    out_dir: Annotated[Path, typer.Argument(help="Model directory to write (for `voxelfm embed`).")],
    checkpoint: Annotated[Path | None, typer.Option(help="A specific checkpoint (default: the newest).")] = None,
    max_patches: Annotated[int, typer.Option(help="Token budget written into the model's preprocessing spec.")] = 25000,
) -> None:
    """Write a run's backbone as a model directory: the EMA teacher, or the student when the
    teacher stayed frozen at random init (e.g. ``cpu_small``)."""
    from voxelfm.ssl.export import export

    export(run_dir, out_dir, checkpoint=checkpoint, max_patches=max_patches)
    console.print(f"model directory: {out_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(pretrain_app, name="pretrain")
