"""``voxelfm embed INPUT... --model DIR --out STORE``: embed a cohort into an EmbeddingStore."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from voxelfm.cli.common import console, exit_if_some_failed, guarded


def _print_summary(summary: Any, store: Path, shard: tuple[int, int] | None) -> None:
    from rich.table import Table

    table = Table(title=f"voxelfm embed → {store}" + (f" (shard {shard[0]}/{shard[1]})" if shard else ""),
                  title_justify="left")
    for col in ("done", "skipped", "failed", "time", "scans/min"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.done), str(summary.skipped), str(summary.failed), f"{summary.seconds:.1f} s",
                  f"{summary.scans_per_minute:.1f}")
    console.print(table)
    if summary.changed:
        console.print(f"{len(summary.changed)} scan(s) embedded again because their source file changed: "
                      f"{', '.join(summary.changed[:5])}{' …' if len(summary.changed) > 5 else ''}", highlight=False)
    if summary.retried:
        console.print(f"{len(summary.retried)} scan(s) that failed in an earlier run were retried: "
                      f"{', '.join(summary.retried[:5])}{' …' if len(summary.retried) > 5 else ''}", highlight=False)
    if summary.worker_deaths:
        console.print(f"[yellow]{summary.worker_deaths} reader worker(s) died[/] (out of memory?); the scans they "
                      "were reading are listed as failed", highlight=False)
    for scan_id, reason in summary.failures[:20]:
        console.print(f"[red]failed[/] {scan_id}: {reason}", highlight=False, soft_wrap=True)
    if len(summary.failures) > 20:
        console.print(f"… and {len(summary.failures) - 20} more (see the store's manifest)", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``embed`` command to ``app``."""

    @app.command("embed")
    @guarded
    def embed(
        inputs: Annotated[list[Path], typer.Argument(help="Folders (DICOM trees, NIfTI/MHA files), files, or CSV manifests (scan_id,path).")],
        model: Annotated[Path, typer.Option("--model", help="Model directory (voxelfm model init / convert-checkpoint / ssl export).")],
        out: Annotated[Path, typer.Option("--out", help="Embedding store directory (created or resumed).")],
        mode: Annotated[str, typer.Option("--mode", help="3d (one pass per scan) or 2.5d (slabs along z).")] = "3d",
        workers: Annotated[int, typer.Option("--workers", help="Reader/preprocessing worker processes (0: in the main process).")] = 2,
        shard: Annotated[str | None, typer.Option("--shard", help="i/n: embed every n-th scan starting at i (default: torchrun RANK/WORLD_SIZE).")] = None,
        device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")] = "auto",
        dtype: Annotated[str, typer.Option("--dtype", help="fp32 (paper parity), bf16 or fp16 (autocast), or auto (bf16 where the CPU has AMX/AVX512-BF16 or the GPU supports it and the first scan's features match fp32 to cosine 0.999).")] = "fp32",
        max_patches: Annotated[int | None, typer.Option("--max-patches", help="Override the spec's patch budget.")] = None,
        spec_file: Annotated[Path | None, typer.Option("--spec", help="Preprocess spec JSON/YAML (default: the model's).")] = None,
        slab_thickness: Annotated[int | None, typer.Option("--slab-thickness", help="2.5d slab thickness in patches (default 4).")] = None,
        slab_overlap: Annotated[int | None, typer.Option("--slab-overlap", help="2.5d slab overlap in patches (default 1).")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
        allow_mixed_models: Annotated[bool, typer.Option(
            "--allow-mixed-models",
            help="Add to a store that holds embeddings of another model (refused by default).")] = False,
    ) -> None:
        """Embed every scan (skipping those already done with this model and spec) into STORE.

        Exit status 2 when the run finished but some scans failed (they are listed). One run writes
        a store at a time (a second gets an error naming the holder); scans whose source file
        changed are embedded again.
        """
        from voxelfm.cli.common import setup_logging
        from voxelfm.core.device import canonical_precision, resolve_device
        from voxelfm.core.errors import ConfigError
        from voxelfm.embed import (
            EmbeddingStore,
            collect_jobs,
            parse_shard,
            shard_jobs,
        )
        from voxelfm.embed.extract import MODES

        setup_logging()  # INFO lines: label maps skipped by discovery, warnings of embedded scans
        if mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}")
        dtype = canonical_precision(dtype, key="--dtype")  # float32/bfloat16/float16 are accepted too
        dev = resolve_device(device)  # before the lock: asking for an absent GPU is refused at once
        shard_spec = parse_shard(shard)
        jobs = shard_jobs(collect_jobs(inputs), shard_spec)
        store = EmbeddingStore(out, shard=shard_spec)
        with store.lock():  # before the model is loaded: a second writer is told at once
            _embed_locked(store, jobs, model, out, shard_spec, mode=mode, workers=workers, dev=dev, dtype=dtype,
                          max_patches=max_patches, spec_file=spec_file, slab_thickness=slab_thickness,
                          slab_overlap=slab_overlap, progress=progress, allow_mixed_models=allow_mixed_models)


def _embed_locked(store: Any, jobs: list[Any], model: Path, out: Path, shard_spec: tuple[int, int] | None, *,
                  mode: str, workers: int, dev: Any, dtype: str, max_patches: int | None, spec_file: Path | None,
                  slab_thickness: int | None, slab_overlap: int | None, progress: bool,
                  allow_mixed_models: bool) -> None:
    from voxelfm.embed import run_embedding
    from voxelfm.models import load_model
    from voxelfm.models.backbones import load_spec

    net = load_model(model, device=dev)
    spec = load_spec(spec_file) if spec_file else net.spec  # a PreprocessSpec or a comparator's NativeSpec
    if max_patches is not None:
        spec = spec.replace(max_patches=max_patches)
    if dtype == "auto":  # measured on the first readable scan (voxelfm.embed.precision)
        from voxelfm.embed.precision import choose_dtype_for_jobs

        choice = choose_dtype_for_jobs(net, jobs, spec, device=dev, mode=mode)
        dtype = choice.name
        console.print(f"--dtype auto: {choice.name} ({choice.reason})", highlight=False, soft_wrap=True)
    console.print(f"model {net.model_id} ({model}) on {dev}; spec {spec.fingerprint()}; "
                  f"{len(jobs)} scans; mode {mode}; {workers} workers", highlight=False)

    from voxelfm.core.progress import progress_bar

    # auto_refresh=False: no refresh thread, so forking the reader workers is thread-free.
    bar = progress_bar(console, last=True, auto_refresh=False, disable=not progress)
    with bar:
        task = bar.add_task("embedding", total=len(jobs), last="")

        def on_progress(scan_id: str, status: str) -> None:
            bar.update(task, advance=1, last=f"{scan_id}: {status}")
            bar.refresh()

        summary = run_embedding(net, jobs, store, spec=spec, mode=mode, workers=workers, device=dev,
                                dtype=dtype, slab_thickness=slab_thickness, slab_overlap=slab_overlap,
                                on_progress=on_progress, allow_mixed_models=allow_mixed_models)
    _print_summary(summary, out, shard_spec)
    exit_if_some_failed(summary.failed, str(out))
