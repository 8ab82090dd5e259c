"""Stage 3: embed every scan with both backbones (full 3D), and with the pretrained one in 2.5D.

Runs :func:`voxelfm.embed.run_embedding` (the engine of ``voxelfm embed``) over the cohort's
``labels.csv``. The 2.5D store feeds the 3D-vs-2.5D comparison (paper Fig. 5): chunked inference
over overlapping axial slabs, CLS aggregated, patch grids stitched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxelfm.demo import layout
from voxelfm.demo.pipeline import CheckResult, DemoContext, Stage

#: (backbone, mode) pairs the demo embeds.
EMBEDDINGS: tuple[tuple[str, str], ...] = (("pretrained", "3d"), ("random", "3d"), ("pretrained", "2.5d"))


class EmbedStage(Stage):
    name = "embed"
    title = "Embed every scan (both backbones, 3D and 2.5D)"
    inputs = ("cohort", "pretrain")
    config_parts = ("embed",)

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.store_dir(ctx.out, b, m) for b, m in EMBEDDINGS]

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from voxelfm.embed import read_manifest_csv, run_embedding
        from voxelfm.models import load_model

        jobs = read_manifest_csv(layout.cohort_dir(ctx.out) / "labels.csv")
        cfg = ctx.config.embed
        summary: dict[str, Any] = {}
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=ctx.console, transient=False) as progress:
            for backbone, mode in EMBEDDINGS:
                model = load_model(layout.model_dir(ctx.out, backbone), device=ctx.device)
                task = progress.add_task(f"{backbone} {mode}", total=len(jobs))
                result = run_embedding(
                    model, jobs, layout.store_dir(ctx.out, backbone, mode), mode=mode, device=ctx.device,
                    slab_thickness=cfg.slab_thickness, slab_overlap=cfg.slab_overlap,
                    on_progress=lambda _scan, _status, t=task: progress.advance(t),
                )
                if result.failed:
                    ctx.console.print(f"[yellow]{result.failed} scan(s) failed ({backbone} {mode}):[/] "
                                      + "; ".join(f"{s}: {e}" for s, e in result.failures[:3]))
                summary[f"{backbone}-{mode}"] = {"done": result.done, "skipped": result.skipped,
                                                 "failed": result.failed, "seconds": round(result.seconds, 2)}
        return summary

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
            model_id = str(read_model_config(layout.model_dir(ctx.out, backbone))["model_id"])
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
