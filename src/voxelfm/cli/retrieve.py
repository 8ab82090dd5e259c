"""``voxelfm retrieve build|query``: a FAISS cosine index over an embedding store, built once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from voxelfm.cli.common import guarded


def register(app: typer.Typer) -> None:
    """Add the ``retrieve`` command group to ``app``."""
    group = typer.Typer(help="Instance retrieval: build a FAISS index from a store, then query it.",
                        no_args_is_help=True)
    _add_build(group)
    _add_query(group)
    app.add_typer(group, name="retrieve")


def _add_build(group: typer.Typer) -> None:
    """``voxelfm retrieve build``."""

    @group.command("build")
    @guarded
    def build(
        store: Annotated[Path, typer.Option("--store", help="Embedding store directory.")],
        out: Annotated[Path, typer.Option("--out", help="Index directory to write.")],
        feature: Annotated[str, typer.Option("--feature", help="cls or mean_patch.")] = "cls",
        ids: Annotated[Path | None, typer.Option("--ids", help="Text file with one scan id per line (default: all).")] = None,
        kind: Annotated[str, typer.Option(
            "--index", help="flat (exact), ivf (IVF, 8-bit codes, exact re-ranking), hnsw, or auto (flat up to "
                            "100,000 scans, ivf above).")] = "auto",
        target_recall: Annotated[float, typer.Option(
            "--target-recall", help="Approximate indexes: smallest search breadth reaching this recall@10 vs exact.")] = 0.97,
    ) -> None:
        """Index the CLS (or mean patch) vectors of a store for cosine search.

        A consolidated store (`voxelfm store compact`) is read through one memory map; with
        `--feature mean_patch` its pooled patch vectors are used without reading any patch grid.
        """
        from voxelfm.core.errors import ConfigError, located
        from voxelfm.probes.data import FeatureSet
        from voxelfm.probes.retrieval import RetrievalIndex, feature_vectors

        wanted = None
        if ids is not None:
            if not ids.is_file():
                raise ConfigError(located(ids, "id list does not exist"))
            wanted = [line.strip() for line in ids.read_text().splitlines() if line.strip()]
        from voxelfm.probes.retrieval import INDEX_KINDS, store_vectors

        if kind not in INDEX_KINDS:
            raise ConfigError(f"--index must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
        fast = store_vectors(store, feature, wanted)
        if fast is not None:
            index = RetrievalIndex.build(fast[0], fast[1], feature=feature, model_id=fast[2], kind=kind,
                                         target_recall=target_recall)
        else:
            feats = FeatureSet.from_store(store, wanted, patches=feature == "mean_patch")
            index = RetrievalIndex.build(feats.ids, feature_vectors(feats, feature), feature=feature,
                                         model_id=feats.model_id, kind=kind, target_recall=target_recall)
        index.save(out)
        typer.echo(f"indexed {len(index)} scans ({feature}, {index.dim} dims, {index.kind}) into {out}")
        if "recall_at_10_vs_exact" in index.stats:
            st = index.stats
            breadth = f"nprobe {st['nprobe']}" if "nprobe" in st else f"efSearch {st.get('efSearch')}"
            typer.echo(f"recall@10 vs exact search: {st['recall_at_10_vs_exact']:.4f} on {st['recall_queries']} "
                       f"indexed scans ({breadth}); built in {st['build_seconds']:.1f} s")


def _add_query(group: typer.Typer) -> None:
    """``voxelfm retrieve query``."""

    @group.command("query")
    @guarded
    def query(
        index_dir: Annotated[Path, typer.Option("--index", help="Index directory from `retrieve build`.")],
        scan: Annotated[list[str], typer.Option("--id", help="Query scan id (repeat for several).")],
        store: Annotated[Path | None, typer.Option("--store", help="Store holding the query scans if they are not indexed.")] = None,
        k: Annotated[int, typer.Option("--k", help="Neighbours to return.")] = 10,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        threads: Annotated[int | None, typer.Option(
            "--threads", help="FAISS (OpenMP) threads for the search (default: one per core); 1 answers single "
                              "queries fastest on a busy machine.")] = None,
    ) -> None:
        """Nearest neighbours (cosine) of scans by id; an indexed query scan is left out of its own list."""
        import numpy as np

        from voxelfm.core.errors import ConfigError, StoreError
        from voxelfm.probes.data import FeatureSet
        from voxelfm.probes.retrieval import RetrievalIndex, feature_vectors, search_threads

        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        index = RetrievalIndex.load(index_dir)
        vectors = []
        for sid in scan:
            if sid in index.ids:
                vectors.append(index.vector(sid))
            elif store is not None:
                feats = FeatureSet.from_store(store, [sid], patches=index.feature == "mean_patch")
                if sid not in feats.ids:
                    raise StoreError(f"{store}: no embedding for scan {sid!r}")
                vectors.append(feature_vectors(feats, index.feature)[0])
            else:
                raise StoreError(f"{index_dir}: scan {sid!r} is not indexed; pass --store to embed-lookup it")
        with search_threads(threads):
            hits = index.search(np.stack(vectors), k, exclude=list(scan))
        if as_json:
            typer.echo(json.dumps({sid: [{"scan_id": h, "cosine": s} for h, s in hit] for sid, hit in zip(scan, hits, strict=True)}))
            return
        from rich.console import Console
        from rich.table import Table

        for sid, hit in zip(scan, hits, strict=True):
            table = Table(title=f"neighbours of {sid}", title_justify="left")
            table.add_column("rank")
            table.add_column("scan_id")
            table.add_column("cosine", justify="right")
            for rank, (h, s) in enumerate(hit, 1):
                table.add_row(str(rank), h, f"{s:.4f}")
            Console().print(table)
