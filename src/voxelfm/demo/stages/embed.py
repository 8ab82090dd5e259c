"""Stage 3: embed every scan with both backbones (full 3D), with the pretrained one in 2.5D, and
with the non-learned HU-histogram baseline.

Both backbones share one preprocessing spec, so each scan is read and preprocessed once and its
grid goes through all four extractions (:func:`voxelfm.embed.features_from_preprocessed`, and
:func:`voxelfm.embed.histogram.histogram_features` on the same patch grid) into four
:class:`voxelfm.embed.EmbeddingStore` directories — a third of the I/O and preprocessing of
three ``voxelfm embed`` runs, which dominate on CPU for a tiny backbone. Resuming and failure
records follow ``voxelfm embed``: scans already stored by the same model, spec and mode are
skipped; a scan that fails is recorded with its reason and the others go on. The 2.5D store feeds
the 3D-vs-2.5D comparison (paper Fig. 5): chunked inference over overlapping axial slabs, CLS
aggregated, patch grids stitched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from voxelfm.demo import layout
from voxelfm.demo.pipeline import CheckResult, DemoContext, Stage

#: (backbone, mode) pairs the demo embeds.
EMBEDDINGS: tuple[tuple[str, str], ...] = (("pretrained", "3d"), ("random", "3d"), ("pretrained", "2.5d"),
                                           (layout.BASELINE, "3d"))


def baseline_id() -> str:
    from voxelfm.embed.histogram import MODEL_ID

    return MODEL_ID


class EmbedStage(Stage):
    name = "embed"
    title = "Embed every scan (both backbones, 3D and 2.5D, and the HU-histogram baseline)"
    inputs = ("cohort", "pretrain")
    config_parts = ("embed",)

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.store_dir(ctx.out, b, m) for b, m in EMBEDDINGS]

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from voxelfm.core.errors import ConfigError, VoxelFMError, located
        from voxelfm.embed import EmbeddingStore, features_from_preprocessed, read_manifest_csv
        from voxelfm.embed.histogram import histogram_features
        from voxelfm.io import load_ct
        from voxelfm.models import load_model
        from voxelfm.preprocess import preprocess

        jobs = read_manifest_csv(layout.cohort_dir(ctx.out) / "labels.csv")
        cfg = ctx.config.embed
        models = {b: load_model(layout.model_dir(ctx.out, b), device=ctx.device) for b in layout.MODEL_BACKBONES}
        spec = models["pretrained"].spec
        if any(m.spec != spec for m in models.values()):
            raise ConfigError("the demo backbones have different preprocessing specs")
        fingerprint = spec.fingerprint()
        patch_size = int(models["pretrained"].config.patch_size)
        ids = {b: models[b].model_id if b in models else baseline_id() for b, _ in EMBEDDINGS}
        stores = {(b, m): EmbeddingStore(layout.store_dir(ctx.out, b, m)) for b, m in EMBEDDINGS}
        done = {(b, m): stores[(b, m)].done(ids[b], fingerprint, m) for b, m in EMBEDDINGS}
        counts = {f"{b}-{m}": {"done": 0, "skipped": 0, "failed": 0} for b, m in EMBEDDINGS}
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=ctx.console) as progress:
            bar = progress.add_task(f"scans ({len(EMBEDDINGS)} embeddings each)", total=len(jobs))
            for job in jobs:
                todo = [key for key in EMBEDDINGS if job.scan_id not in done[key]]
                for key in EMBEDDINGS:
                    if key not in todo:
                        counts[f"{key[0]}-{key[1]}"]["skipped"] += 1
                start = time.perf_counter()
                pre, error = None, None
                if todo:
                    try:
                        pre = preprocess(load_ct(job.source), spec)
                    except VoxelFMError as exc:
                        error = str(exc)
                prep_seconds = time.perf_counter() - start
                for backbone, mode in todo:
                    t0 = time.perf_counter()
                    store, model = stores[(backbone, mode)], models.get(backbone)
                    failure = error
                    if pre is not None:
                        try:
                            if model is None:  # the non-learned baseline, on the backbones' patch grid
                                feats = histogram_features(pre, patch_size)
                            else:
                                feats = features_from_preprocessed(model, pre, mode=mode, device=ctx.device,
                                                                   slab_thickness=cfg.slab_thickness,
                                                                   slab_overlap=cfg.slab_overlap)
                            store.write(job.scan_id, feats, source=job.source,
                                        seconds=prep_seconds + time.perf_counter() - t0)
                        except VoxelFMError as exc:
                            failure = str(exc)
                        except (RuntimeError, ValueError, MemoryError) as exc:  # e.g. out of memory
                            failure = located(job.source, f"{type(exc).__name__}: {exc}")
                    key = f"{backbone}-{mode}"
                    if failure is not None:
                        store.record_failure(job.scan_id, job.source, failure, model_id=ids[backbone],
                                             spec_fingerprint=fingerprint, mode=mode)
                        counts[key]["failed"] += 1
                        ctx.console.print(f"[yellow]{job.scan_id} failed ({key}):[/] {failure}")
                    else:
                        counts[key]["done"] += 1
                progress.advance(bar)
        return counts

    def check(self, ctx: DemoContext) -> CheckResult:
        return check_stores(ctx)


def check_stores(ctx: DemoContext) -> CheckResult:
    """Every scan of the cohort is in every store, ok, from the right model and in the right mode."""
    import pandas as pd

    from voxelfm.core.errors import VoxelFMError
    from voxelfm.embed import EmbeddingStore
    from voxelfm.models import read_model_config

    res = CheckResult()
    try:
        ids = set(pd.read_csv(layout.cohort_dir(ctx.out) / "labels.csv")["scan_id"].astype(str))
    except (OSError, ValueError, KeyError) as exc:
        res.problems.append(f"cohort labels unreadable ({exc})")
        return res
    for backbone, mode in EMBEDDINGS:
        path = layout.store_dir(ctx.out, backbone, mode)
        try:
            model_id = (baseline_id() if backbone == layout.BASELINE
                        else str(read_model_config(layout.model_dir(ctx.out, backbone))["model_id"]))
        except (VoxelFMError, OSError, KeyError) as exc:
            res.problems.append(f"{layout.model_dir(ctx.out, backbone)}: config unreadable ({exc})")
            continue
        store = EmbeddingStore(path)
        latest = store.latest()
        missing = sorted(i for i in ids if latest.get(i, {}).get("status") != "ok")
        res.require(not missing, f"{path}: {len(missing)} scan(s) not embedded (e.g. {missing[:3]})")
        wrong = sorted(i for i in ids & set(latest) if latest[i].get("model_id") != model_id
                       or latest[i].get("mode", "3d") != mode)
        res.require(not wrong, f"{path}: {len(wrong)} entries from another model or mode (e.g. {wrong[:3]})")
        absent = sorted(i for i in ids if not store.entry_path(i).is_file())
        res.require(not absent, f"{path}: {len(absent)} entry files missing (e.g. {absent[:3]})")
    return res
