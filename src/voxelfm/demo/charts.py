"""Metric charts of the demo report, drawn by :mod:`voxelfm.viz.plots` from ``results.json`` data.

Each chart is written as a PNG under ``OUT/figures/`` (handy on its own) and its bytes are embedded
in the HTML report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from voxelfm.demo.results import Estimate, TaskRow, parse_rows

FINDINGS_PER_PANEL = 4  # more bars per panel make the finding names unreadable


def _est_row(est: Estimate) -> dict[str, float | None]:
    return {"value": est.value, "ci_low": est.low, "ci_high": est.high}


def task_table(rows: Sequence[TaskRow], group: str = "backbone") -> pd.DataFrame:
    """Long table (category, task, metric, <group>, value, ci_low, ci_high) of task rows."""
    records = []
    for r in rows:
        for key, est in r.values.items():
            if est.value is None:
                continue
            records.append({"category": r.category, "task": _short(r.task), "metric": r.metric, group: key,
                            **_est_row(est)})
    return pd.DataFrame(records)


def _short(text: str, width: int = 22) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3])


def _draw(draw: Callable[[pd.DataFrame, Path], Path], table: pd.DataFrame, path: Path) -> bytes | None:
    if table.empty:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return draw(table, path).read_bytes()


def all_charts(results: Mapping[str, Any], out_dir: Path) -> dict[str, bytes]:
    """Bars with CIs, data-fraction curve, MLP vs Q-Former, 3D vs 2.5D and per-finding F1."""
    from voxelfm.viz import plots

    charts: dict[str, bytes | None] = {}
    tasks = parse_rows(results.get("tasks", []))
    charts["bars"] = _draw(lambda t, p: plots.metric_bars(t, p, group="backbone"), task_table(tasks),
                           out_dir / "results_bars.png")

    points = (results.get("data_fraction") or {}).get("points") or []
    frac = pd.DataFrame([{"fraction": p["fraction"], "backbone": p["backbone"], "seed": p.get("seed", 0),
                          **_est_row(Estimate.from_any(p))} for p in points if p.get("value") is not None])
    charts["data_fraction"] = _draw(
        lambda t, p: plots.fraction_curves(t, p, group="backbone"), frac, out_dir / "data_fraction.png")

    heads = []
    for r in parse_rows(results.get("heads", [])):
        for key, est in r.values.items():
            backbone, _, head = key.partition(" · ")
            if est.value is not None:
                heads.append({"task": _short(f"{backbone}: {r.task}"), "metric": r.metric, "head": head,
                              **_est_row(est)})
    charts["heads"] = _draw(plots.head_comparison, pd.DataFrame(heads), out_dir / "mlp_vs_qformer.png")

    modes = task_table(parse_rows(results.get("inference_modes", [])), group="mode")
    charts["inference_modes"] = _draw(lambda t, p: plots.metric_bars(t, p, group="mode"), modes,
                                      out_dir / "3d_vs_2.5d.png")

    f1 = []
    items = list(results.get("per_finding_f1", []))
    n_panels = max(1, -(-len(items) // FINDINGS_PER_PANEL))
    for i, item in enumerate(items):
        panel = f"per-finding F1 ({i // FINDINGS_PER_PANEL + 1}/{n_panels})"
        for source, key in (("classification probe", "probe"), ("generated report", "report")):
            est = Estimate.from_any(item.get(key))
            if est.value is not None:
                f1.append({"category": panel, "task": _short(item["finding"].replace("_", " "), 12),
                           "metric": "", "source": source, **_est_row(est)})
    charts["per_finding_f1"] = _draw(lambda t, p: plots.metric_bars(t, p, group="source"), pd.DataFrame(f1),
                                     out_dir / "per_finding_f1.png")
    return {k: v for k, v in charts.items() if v}
