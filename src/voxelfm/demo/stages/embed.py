"""Stage 3: embed every scan with both backbones (full 3D), with the pretrained one in 2.5D, with the
non-learned HU-histogram baseline, and with any comparator backbones added by ``--backbones``.

One :func:`voxelfm.embed.run_embeddings` pass fills every store (each scan read and preprocessed
once per distinct spec; resuming, crash safety and failure records as in ``voxelfm embed``). The
2.5D store feeds the 3D-vs-2.5D comparison (paper Fig. 5). Comparators are saved here at random
init with a reduced configuration of :mod:`voxelfm.models.backbones.reduced`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxelfm.core.stages import CheckResult, Stage
from voxelfm.demo import layout
from voxelfm.demo.config import ComparatorConfig, DemoContext


def save_comparator(ctx: DemoContext, comparator: ComparatorConfig) -> Path:
    """Build a comparator at random init (``build_backbone`` with its ``--set`` overrides) and save it
    with its own preprocessing recipe."""
    from voxelfm.models import save_model
    from voxelfm.models.backbones import LICENCES, NativeSpec, build_backbone

    model = build_backbone(comparator.name, comparator.sets, seed=comparator.seed)
    path = layout.model_dir(ctx.out, comparator.name)
    save_model(model, path, spec=NativeSpec(comparator.name, dict(comparator.spec)), card={
        "title": f"{comparator.name} at random initialisation, reduced for a CPU (voxelfm demo)",
        "description": "The comparator's architecture with reduced hyper-parameters and random weights: it shows "
                       "the comparison harness end to end, not the published model's quality.",
        "training_data": "none",
        "licence": f"Random weights (no licence attached); the published weights: {LICENCES[comparator.name]}",
    })
    return path


class EmbedStage(Stage):
    name = "embed"
    title = "Embed every scan (both backbones, 3D and 2.5D, the HU-histogram baseline, any comparators)"
    inputs = ("cohort", "pretrain")
    config_parts = ("embed",)

    def outputs(self, ctx: DemoContext) -> list[Path]:
        models = [layout.model_dir(ctx.out, name) for name in layout.comparator_names(ctx.config)]
        return [layout.store_dir(ctx.out, b, m) for b, m in layout.embeddings(ctx.config)] + models

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        from voxelfm.core.progress import progress_bar
        from voxelfm.embed import EmbedTarget, read_manifest_csv, run_embeddings
        from voxelfm.embed.histogram import HistogramBaseline
        from voxelfm.models import load_model

        cfg = ctx.config.embed
        for comparator in cfg.backbones:
            save_comparator(ctx, comparator)
        names = (*layout.MODEL_BACKBONES, *layout.comparator_names(ctx.config))
        models: dict[str, Any] = {b: load_model(layout.model_dir(ctx.out, b), device=ctx.device) for b in names}
        # the baseline's tokens sit on the pretrained backbone's patch grid, from the same preprocessing
        models[layout.BASELINE] = HistogramBaseline(models["pretrained"].spec)
        embeddings = layout.embeddings(ctx.config)
        targets = [EmbedTarget(models[b], layout.store_dir(ctx.out, b, m), mode=m) for b, m in embeddings]
        jobs = read_manifest_csv(layout.cohort_dir(ctx.out) / "labels.csv")
        with progress_bar(ctx.console) as progress:
            bar = progress.add_task(f"scans ({len(targets)} embeddings each)", total=len(jobs))
            summaries = run_embeddings(targets, jobs, device=ctx.device, slab_thickness=cfg.slab_thickness,
                                       slab_overlap=cfg.slab_overlap,
                                       on_progress=lambda scan_id, status: progress.advance(bar))
        counts = {}
        for target, summary in zip(targets, summaries, strict=True):
            label = Path(target.store).name
            for scan_id, reason in summary.failures:
                ctx.console.print(f"[yellow]{scan_id} failed ({label}):[/] {reason}")
            counts[label] = {"done": summary.done, "skipped": summary.skipped, "failed": summary.failed}
        return counts

    def check(self, ctx: DemoContext) -> CheckResult:
        return check_stores(ctx)


def check_stores(ctx: DemoContext) -> CheckResult:
    """Every scan of the cohort is in every store, ok, from the right model and in the right mode."""
    import pandas as pd

    from voxelfm.core.errors import VoxelFMError
    from voxelfm.embed import EmbeddingStore
    from voxelfm.embed.histogram import MODEL_ID as BASELINE_ID
    from voxelfm.models import read_model_config

    res = CheckResult()
    try:
        ids = set(pd.read_csv(layout.cohort_dir(ctx.out) / "labels.csv")["scan_id"].astype(str))
    except (OSError, ValueError, KeyError) as exc:
        res.problems.append(f"cohort labels unreadable ({exc})")
        return res
    for backbone, mode in layout.embeddings(ctx.config):
        path = layout.store_dir(ctx.out, backbone, mode)
        try:
            model_id = (BASELINE_ID if backbone == layout.BASELINE
                        else str(read_model_config(layout.model_dir(ctx.out, backbone))["model_id"]))
        except (VoxelFMError, OSError, KeyError) as exc:
            res.problems.append(f"{layout.model_dir(ctx.out, backbone)}: config unreadable ({exc})")
            continue
        res.problems += EmbeddingStore(path).verify(ids, model_id=model_id, mode=mode)
    return res
