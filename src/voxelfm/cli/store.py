"""``voxelfm store compact|info``: consolidate embedding stores (one per rank or node) into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxelfm.cli.common import console, guarded


def register(app: typer.Typer) -> None:
    """Add the ``store`` command group to ``app``."""
    group = typer.Typer(help="Embedding stores: compact (merge shards into memory-mapped arrays), info.",
                        no_args_is_help=True)

    @group.command("compact")
    @guarded
    def compact_cmd(
        out: Annotated[Path, typer.Argument(help="Store to write (created if absent); its own entries are folded in too.")],
        sources: Annotated[list[Path] | None, typer.Argument(
            help="Stores to merge into OUT (e.g. one per node of a multi-node run); only read.")] = None,
        on_conflict: Annotated[str, typer.Option(
            "--on-conflict", help="A scan id with different embeddings in two stores: error (default) or newest.")] = "error",
        allow_mixed_models: Annotated[bool, typer.Option(
            "--allow-mixed-models", help="Merge embeddings of several models (refused by default).")] = False,
        keep_entries: Annotated[bool, typer.Option(
            "--keep-entries", help="Keep OUT's per-scan entry files and manifests after folding them.")] = False,
    ) -> None:
        """Fold OUT's per-scan entries and every SOURCE store into one consolidated generation of OUT.

        `voxelfm store compact STORE` compacts a store in place (all its shard manifests);
        `voxelfm store compact OUT RANK0 RANK1 ...` merges per-node stores. Identical duplicates
        are kept once; different embeddings under one scan id stop the merge (or --on-conflict
        newest). Every writer lock of every store involved is held while compacting.
        """
        from voxelfm.embed.shards import compact

        report = compact(out, list(sources or []), allow_mixed_models=allow_mixed_models,
                         on_conflict=on_conflict, keep_entries=keep_entries)
        console.print(f"{out}: {report.generation} holds {report.scans} scans "
                      f"({report.from_entries} folded from entry files; {report.identical_duplicates} identical "
                      f"duplicate(s) kept once; {report.failed} failed scan(s) listed) in {report.seconds:.1f} s",
                      highlight=False, soft_wrap=True)
        if report.replaced_duplicates:
            console.print(f"[yellow]{len(report.replaced_duplicates)} scan id(s) had different embeddings; the newest "
                          f"was kept:[/] {', '.join(report.replaced_duplicates[:10])}", highlight=False, soft_wrap=True)
        if report.removed_entries:
            console.print(f"removed {report.removed_entries} folded entry file(s)", highlight=False)

    @group.command("info")
    @guarded
    def info_cmd(store: Annotated[Path, typer.Argument(help="Embedding store directory.")]) -> None:
        """Counts of a store: ok/failed scans, models, consolidated generation and live entries."""
        from voxelfm.core.errors import StoreError, located
        from voxelfm.embed import EmbeddingStore

        if not store.is_dir():
            raise StoreError(located(store, "embedding store does not exist"))
        s = EmbeddingStore(store)
        cons = s.consolidated()
        live = s._live_latest()
        typer.echo(f"{store}: {len(s.ids())} scans ok, {len(s.ids('failed'))} failed")
        if cons is not None:
            typer.echo(f"  consolidated {cons.generation}: {len(cons)} scans, {cons.dim} dims, models "
                       f"{cons.info.get('models')}")
        typer.echo(f"  live manifest records: {len(live)} (fold them in with `voxelfm store compact {store}`)")

    app.add_typer(group, name="store")
