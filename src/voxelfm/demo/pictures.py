"""Draw every figure of the demo report from the run's outputs (CT files, stores, summaries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.data.phantom.reader import CohortReader
from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext
from voxelfm.viz.panels import pca_maps, retrieval_example, segmentation_overlay
from voxelfm.viz.slices import ct_thumbnail

THUMB_WIDTH = 150


def thumbnail(cohort: CohortReader, scan_id: str) -> np.ndarray:
    """An axial thumbnail through the scan's largest nodule (or its middle)."""
    vol = cohort.ct(scan_id)
    return ct_thumbnail(vol.array, spacing=vol.spacing, axis="axial", index=cohort.axial_index(scan_id),
                        width=THUMB_WIDTH)


def retrieval_figures(ctx: DemoContext, cohort: CohortReader, examples: list[dict[str, Any]]) -> list[tuple[bytes, str]]:
    out = []
    for ex in examples[: ctx.config.n_examples]:
        png, hits = retrieval_example(ex, lambda s: thumbnail(cohort, s), lambda s: ", ".join(cohort.findings(s)))
        out.append((png, f"Query {ex['query']} ({ex.get('backbone', 'pretrained')} backbone): {hits} of "
                         f"{len(ex['neighbours'])} nearest neighbours share a finding with it."))
    return out


def segmentation_figures(ctx: DemoContext, cohort: CohortReader, examples: list[dict[str, Any]]) -> list[tuple[bytes, str]]:
    from voxelfm.data.phantom import SEGMENTATION_LABELS
    from voxelfm.io import load_label_map

    out = []
    for ex in examples[: ctx.config.n_examples]:
        scan_id = str(ex["scan_id"])
        png = segmentation_overlay(cohort.ct(scan_id).array, cohort.label_map(scan_id),
                                   load_label_map(ctx.out / str(ex["prediction"]))[0], dict(SEGMENTATION_LABELS),
                                   name=scan_id)
        dice = ex.get("dice")
        caption = f"Test scan {scan_id} ({ex.get('backbone', 'pretrained')} backbone)"
        out.append((png, caption + (f": macro Dice over structures {float(dice):.3f}." if dice is not None else ".")))
    return out


def pca_figures(ctx: DemoContext, cohort: CohortReader, scan_ids: list[str]) -> list[tuple[bytes, str]]:
    """DINO-style PCA maps of every backbone over axial and coronal slices of test scans."""
    from voxelfm.embed import EmbeddingStore
    from voxelfm.preprocess import PreprocessSpec, preprocess

    if not scan_ids:
        return []
    spec = PreprocessSpec.load(layout.model_dir(ctx.out, "pretrained") / "preprocess.json")
    stores = {b: EmbeddingStore(layout.store_dir(ctx.out, b, "3d")) for b in layout.BACKBONE_NAMES}
    maps = pca_maps({s: preprocess(cohort.ct(s), spec) for s in scan_ids},
                    {b: {s: store.get(s) for s in scan_ids} for b, store in stores.items()})
    return [(png, f"{axis.capitalize()} middle slices of test scans on the backbone's own preprocessed grid; colours "
                  "= first three principal components of the patch tokens, fitted per backbone on the body patches "
                  "of these scans.") for axis, png in maps.items()]


FINDINGS_PER_PANEL = 4  # more bars per panel make the finding names unreadable


def metric_charts(results: dict[str, Any], out_dir: Path) -> dict[str, bytes | None]:
    """Bars with CIs, data-fraction curve, MLP vs Q-Former, 3D vs 2.5D and per-finding F1 (also
    written as PNGs under ``out_dir``)."""
    import pandas as pd

    from voxelfm.demo.results import parse_rows
    from voxelfm.viz.result_rows import ResultRow, as_ci
    from voxelfm.viz.results_report import bars_png, fractions_png, heads_png

    points = (results.get("data_fraction") or {}).get("points") or []
    frac = pd.DataFrame([{"fraction": p["fraction"], "backbone": p["backbone"], "seed": p.get("seed", 0),
                          "value": ci.value, "ci_low": ci.ci_low, "ci_high": ci.ci_high}
                         for p in points if p.get("value") is not None for ci in [as_ci(p)]])
    items = list(results.get("per_finding_f1", []))
    panels = max(1, -(-len(items) // FINDINGS_PER_PANEL))
    f1 = [ResultRow(f"per-finding F1 ({i // FINDINGS_PER_PANEL + 1}/{panels})", item["finding"].replace("_", " "), "",
                    values={"classification probe": as_ci(item.get("probe")), "generated report": as_ci(item.get("report"))})
          for i, item in enumerate(items)]
    return {
        "bars": bars_png(parse_rows(results.get("tasks", [])), out_dir / "results_bars.png"),
        "data_fraction": fractions_png(frac, out_dir / "data_fraction.png"),
        "heads": heads_png(parse_rows(results.get("heads", [])), out_dir / "mlp_vs_qformer.png"),
        "inference_modes": bars_png(parse_rows(results.get("inference_modes", [])), out_dir / "3d_vs_2.5d.png",
                                    group="mode"),
        "per_finding_f1": bars_png(f1, out_dir / "per_finding_f1.png", group="source", wrap=12),
    }


def all_figures(ctx: DemoContext, results: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the report, keyed as :func:`voxelfm.demo.document.compose_report` expects."""
    cohort = CohortReader(layout.cohort_dir(ctx.out))
    figures: dict[str, Any] = {k: v for k, v in metric_charts(results, ctx.out / "figures").items() if v}
    examples = results.get("examples", {})
    figures["retrieval"] = retrieval_figures(ctx, cohort, examples.get("retrieval", []))
    figures["segmentation"] = segmentation_figures(ctx, cohort, examples.get("segmentation", []))
    figures["pca"] = pca_figures(ctx, cohort, cohort.ids("test")[: min(3, ctx.config.n_examples)])
    return figures
